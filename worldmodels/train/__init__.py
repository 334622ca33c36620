"""Train steps and loops: V (vision.py), M (mdnrnn.py), C (es.py)."""
