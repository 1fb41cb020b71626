"""Offline side of the four RL agents: environment, rewards, training job, ONNX export, evaluation.

Needs the ``train`` extra (torch, stable-baselines3, gymnasium, onnx). The run-time side, which
needs only numpy and onnxruntime, is :mod:`ensemble_trader.domain.agents`.
"""
