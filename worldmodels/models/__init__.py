"""Networks: vision models (V), the MDN-RNN (M) and the controller (C). No losses, no loops."""
