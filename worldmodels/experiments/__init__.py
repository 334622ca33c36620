"""The experiments of the knowledge-sharing and distillation sources on the generative models."""
