"""The Flower side of fedadc (thin: the math lives in fedadc).

The strategy and its transport (``split_learning``), the message codec (``codec``), Flower's
run-config keys (``run_config``), and the tools that start Flower locally: the private
``flwr run`` launcher (``launcher``), a loopback deployment (``local_deployment``) and the
sweep's Flower runner behind ``fedadc-experiment`` (``flower_runner``).
"""

from strategies.split_learning import SplitLearningStrategy

__all__ = ["SplitLearningStrategy"]
