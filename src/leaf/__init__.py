"""LEAF: label-efficient IQA by distilling an MLLM teacher into a lightweight CNN student."""

__version__ = "0.1.0"
