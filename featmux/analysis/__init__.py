"""Analysis tools for embedding layers.

- `collisions`: per-feature shares of values and traffic that share a row, within and across features.
- `orthogonality`: principal angles between features' first-layer weight blocks (Coleman et al. 2023).
- `planner`: memory budget + cardinalities -> a Unified Embedding layout with expected collision rates.
- `cli`: the `featmux analyze` commands (`analyze_app`).
"""

from featmux.analysis.collisions import CollisionReport, FeatureCollisions, SlotCollisions, collision_stats
from featmux.analysis.orthogonality import (
    FirstLayer,
    OrthogonalityReport,
    checkpoint_orthogonality,
    feature_columns,
    first_dense_weight,
    model_orthogonality,
    orthogonality,
    principal_angles,
)
from featmux.analysis.planner import (
    FeaturePlan,
    PlannerConfig,
    TablePlan,
    UnifiedPlan,
    collision_probability,
    expected_collision_rate,
    foreign_share,
    parse_memory,
    plan_unified,
)

__all__ = [
    "CollisionReport",
    "FeatureCollisions",
    "FeaturePlan",
    "FirstLayer",
    "OrthogonalityReport",
    "PlannerConfig",
    "SlotCollisions",
    "TablePlan",
    "UnifiedPlan",
    "checkpoint_orthogonality",
    "collision_probability",
    "collision_stats",
    "expected_collision_rate",
    "feature_columns",
    "first_dense_weight",
    "foreign_share",
    "model_orthogonality",
    "orthogonality",
    "parse_memory",
    "plan_unified",
    "principal_angles",
]
