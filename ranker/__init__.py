"""The transport-free ranking core: route, retrieve, features, plan, score, merge.

Nothing here imports TensorFlow or server code; it talks to model servers only through the slim
TF-Serving wire protos in ``rankserve.tfserving.v1``.
"""
