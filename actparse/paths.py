"""Where each artifact lives, relative to the project (or test) root.

``dvc.yaml`` names the same paths; ``tests/test_dag.py`` checks the two agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Paths:
    root: Path = Path(".")

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    # --- data set (synth stage, or a user's folder set by params data.root) ---
    @property
    def synth(self) -> Path:
        return self.root / "artifacts" / "synth"

    # --- per-stage artifacts ---
    @property
    def frames(self) -> Path:
        return self.root / "artifacts" / "frames.parquet"

    @property
    def skips(self) -> Path:
        return self.root / "artifacts" / "skips"

    @property
    def models(self) -> Path:
        return self.root / "artifacts" / "models"

    @property
    def persons(self) -> Path:
        return self.root / "artifacts" / "persons.parquet"

    @property
    def keypoints(self) -> Path:
        return self.root / "artifacts" / "keypoints.parquet"

    @property
    def refined(self) -> Path:
        return self.root / "artifacts" / "refined_persons.parquet"

    @property
    def part_train_persons(self) -> Path:
        """The refined persons train_part_detector reads (stage part_train_persons): empty when its
        configuration reads none, so that it depends on refined_persons.parquet only when it uses it."""
        return self.root / "artifacts" / "part_train_persons.parquet"

    @property
    def parts(self) -> Path:
        return self.root / "artifacts" / "parts.parquet"

    @property
    def part_labels(self) -> Path:
        return self.root / "artifacts" / "part_labels"

    @property
    def video_predictions(self) -> Path:
        return self.root / "artifacts" / "video_predictions.parquet"

    @property
    def part_states(self) -> Path:
        return self.root / "artifacts" / "part_states.parquet"

    @property
    def tubes(self) -> Path:
        return self.root / "artifacts" / "tubes.parquet"

    @property
    def eval_records(self) -> Path:
        """evaluate: per-video records (detections.parquet, ground_truth.parquet, videos.parquet)."""
        return self.root / "artifacts" / "eval_records"

    # --- the other seed systems (seed 003 / 004 / 000), each behind its params switch ---
    @property
    def stad(self) -> Path:
        """Seed 003 (MultiSports): action_detections*.parquet, tubes.parquet."""
        return self.root / "artifacts" / "stad"

    @property
    def gym(self) -> Path:
        """Seed 004 (FineGym): clip_predictions.parquet."""
        return self.root / "artifacts" / "gym"

    @property
    def partattn(self) -> Path:
        """Seed 000 (Hikvision part-state attention): part_states.parquet."""
        return self.root / "artifacts" / "partattn"

    @property
    def submission(self) -> Path:
        return self.root / "artifacts" / "submission"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics"

    @property
    def plots(self) -> Path:
        return self.root / "plots"


def data_root(params: dict, root: Path | str = ".") -> Path:
    """The data set folder: params ``data.root``, relative to ``root`` unless absolute."""
    from .params import get

    p = Path(get(params, "data.root", str))
    return p if p.is_absolute() else Path(root) / p


def check_outside(given: str | Path, out_dir: Path, param: str) -> None:
    """Refuse a model to use (``param``) that lies inside ``out_dir``, the folder its stage writes:
    ``dvc repro`` empties a stage's outputs before running it, so the model would be gone."""
    g, o = Path(given).resolve(), Path(out_dir).resolve()
    if g == o or o in g.parents:
        raise ValueError(f"{param} {given}: lies inside {out_dir}, which this stage writes (dvc repro empties it "
                         f"before the stage runs); copy the model out first (e.g. cp -r artifacts/models "
                         f"models/run1) and point {param} there")
