"""Teacher side of LEAF: backends that judge images, the level/pair math, and the Parquet cache."""
