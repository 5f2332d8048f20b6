"""kdlab: learn how temperature works in knowledge distillation."""
__version__ = "0.1.0"
