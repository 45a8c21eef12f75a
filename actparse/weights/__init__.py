"""Pretrained backbone weights as users hold them: safe reading and key maps, apart from the models.

* :mod:`actparse.weights.core`: ``torch.load(weights_only=True)`` (or a numpy-only reader for Caffe2
  pickles), unwrapping of ``state_dict`` / ``model_state`` / ``blobs``, prefix and head stripping.
* :mod:`actparse.weights.csn`: CSN layouts (pytorchvideo, VMZ, mmaction2) for :mod:`actparse.csn`.
* :mod:`actparse.weights.resnet3d`: SlowFast and SlowOnly layouts (pytorchvideo, PySlowFast incl.
  its Caffe2 files, mmaction2) for seeds 003 (:mod:`actparse.stad`), 004 (:mod:`actparse.gym`)
  and 000 (:mod:`actparse.partattn`).

docs/checkpoints.md lists the formats and the params that point each model at a file.
"""
