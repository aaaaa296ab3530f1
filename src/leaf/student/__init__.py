"""The CNN student: frozen timm backbone features, a small trainable quality head, the two-stage
training (stage 1: distillation from the MLLM teacher, no MOS; stage 2: calibration on a small MOS
subset) and the workflow step functions.

Modules: :mod:`~leaf.student.backbones` (timm models with offline weights),
:mod:`~leaf.student.features` (frozen-feature extraction and what the student sees),
:mod:`~leaf.student.heads` (the head and its checkpoints), :mod:`~leaf.student.losses`,
:mod:`~leaf.student.train`, :mod:`~leaf.student.steps` (head mode); end-to-end fine-tuning
("full" mode): :mod:`~leaf.student.finetune_model` (the model and its checkpoint),
:mod:`~leaf.student.precision`, :mod:`~leaf.student.image_cache`,
:mod:`~leaf.student.finetune_inputs`, :mod:`~leaf.student.eval_inputs`,
:mod:`~leaf.student.finetune` (the training loops) and :mod:`~leaf.student.finetune_steps`;
:mod:`~leaf.student.stages` (the rules' functions in either mode). Importing the package has no
side effects.
"""

from __future__ import annotations
