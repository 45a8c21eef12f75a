"""The networks, one file per model, each with one builder of keyword-only arguments.

* :mod:`~actparse.models.video_resnet`: the 3D ResNet that CSN, SlowOnly and SlowFast share (stage
  depths and their checks, truncation to a slim variant, Kinetics mean / std).
* :mod:`~actparse.models.csn`: ir-CSN / ip-CSN and the seven-task classifier of seed 001
  (:func:`~actparse.models.csn.create_multitask_csn`).
* :mod:`~actparse.models.slowonly`: SlowOnly (:func:`~actparse.models.slowonly.create_slowonly`).
* :mod:`~actparse.models.slowfast`: SlowFast (:func:`~actparse.models.slowfast.create_slowfast`).
* :mod:`~actparse.models.stad`: seed 003's detector, SlowFast + PCCA or linear RoI head
  (:func:`~actparse.models.stad.create_stad_model`).
* :mod:`~actparse.models.gym`: seed 004's per-level SlowOnly classifiers and joint model
  (:func:`~actparse.models.gym.create_level_model`, :func:`~actparse.models.gym.create_joint_model`).
* :mod:`~actparse.models.partattn`: seed 000's part-state network
  (:func:`~actparse.models.partattn.create_part_state_net`).

Pretrained weights and the key maps of other layouts are in :mod:`actparse.weights`; seeding,
optimizers, schedules and checkpoint files in :mod:`actparse.train`; how each system is trained and
run in :mod:`actparse.csn`, :mod:`actparse.stad`, :mod:`actparse.gym`, :mod:`actparse.partattn`.
Building a model never draws from a random generator other than torch's global one, in a fixed
order, so a seeded build gives the same weights.
"""
