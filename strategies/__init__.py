"""Flower strategies for federated split learning (thin: the math lives in fedadc)."""

from strategies.split_learning import SplitLearningStrategy

__all__ = ["SplitLearningStrategy"]
