"""The settings each analysis accepts in a study's ``analyses:`` section, typed.

One model per analysis (``extra="forbid"``), so a misspelt or ill-typed setting is
refused when the study file is loaded, before any run trains. The defaults are the
values the study adapters have always used: changing one changes every result table.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from transferlens.validation import StrictModel


class AnalysisSettings(StrictModel):
    """Base of every analysis's settings (``{}`` or ``null`` in a study = all defaults)."""


class ReuseSettings(AnalysisSettings):
    """Feature reuse (paper Fig. 2-3): read from runs.csv, nothing to set."""


class PretrainCheckpointsSettings(AnalysisSettings):
    """P-T from several pre-training epochs (paper Fig. 7): read from runs.csv."""


class MistakesSettings(AnalysisSettings):
    """Common and uncommon mistakes (paper Fig. 4, Cohen's kappa with a bootstrap interval)."""

    n_bootstrap: int = Field(default=1000, ge=0, description="bootstrap resamples of kappa")
    examples_per_cell: int = Field(
        default=12, ge=0, description="test images listed per cell for the report's gallery"
    )


class CkaSettings(AnalysisSettings):
    """Feature similarity (paper Table 2): minibatch CKA per layer, and the layer matrix."""

    layers: list[str] | None = Field(
        default=None,
        description="None = each stage's output and the classifier's input (the module "
        "map's); a name, name:in (its input) or name:out.<key> (a part of its output)",
    )
    n_bootstrap: int = Field(default=200, ge=0)
    n_permutations: int = Field(
        default=100,
        ge=0,
        description="draws of the permutation null (rows permuted within each batch) behind "
        "cka_p; 0 = no p-value",
    )
    max_examples: int | None = Field(default=None, ge=1, description="None = the test split")
    matrix: bool = Field(default=True, description="also the layer-by-layer CKA matrix")
    tokens: Literal["all", "cls", "mean"] = Field(
        default="all",
        description="token outputs [N, T, D]: all = the T*D values flattened, cls = token 0, "
        "mean = the mean over tokens",
    )


class DistanceSettings(AnalysisSettings):
    """l2 distance between the weights of two models (paper Table 3), per unit and per
    stage of the study's module map: nothing to set."""


class InterpolationSettings(AnalysisSettings):
    """Loss and metric along the straight line between two models (paper Fig. 5), every
    seed pair, optionally after permutation alignment and with REPAIR (docs/interpolation.md)."""

    points: int = Field(default=11, ge=2, description="lambdas from 0 to 1, both included")
    max_examples: int | None = Field(default=None, ge=1, description="None = the test split")
    align: list[Literal["none", "weights", "activations"]] = Field(
        default=["none"],
        min_length=1,
        description="curves per seed pair: none = the models as trained; weights / "
        "activations = the second model's units permuted to match the first's (weight "
        "matching, or activation correlations over the target's training data)",
    )
    repair: bool = Field(
        default=False,
        description="also a REPAIRed curve for every aligned setting (not for none), "
        "unit statistics from the target's training data",
    )
    n_bootstrap: int = Field(
        default=200, ge=0, description="bootstrap resamples of the test set for each barrier"
    )

    @model_validator(mode="after")
    def _check_align(self) -> InterpolationSettings:
        if len(set(self.align)) != len(self.align):
            raise ValueError(f"interpolation: align lists a method twice ({self.align})")
        if self.repair and self.align == ["none"]:
            raise ValueError(
                "interpolation: repair: true needs an align method other than none "
                "(REPAIR rescales aligned units)"
            )
        return self


class CriticalitySettings(AnalysisSettings):
    """Module criticality (paper Fig. 6, docs/criticality.md): rewinding each unit towards
    its init, with noise, within a bound on the training loss; rewinding of every seed."""

    definition: Literal["epsilon", "reference"] = Field(
        default="epsilon",
        description="epsilon = an absolute bound on the training loss and sigmas log-spaced "
        "over sigma_span x each unit's weight RMS; reference = tolerance x the final loss "
        "and sigmas linspace(1e-16, 1) (the TensorFlow reference; unresolved at convergence)",
    )
    epsilon: float = Field(default=0.1, gt=0, description="bound on the mean training loss")
    sigma_span: tuple[float, float] = Field(
        default=(1e-3, 10.0), description="smallest, largest sigma / the unit's weight RMS"
    )
    n_noise: int = Field(default=10, ge=1, description="noise draws per (alpha, sigma)")
    tolerance: float = Field(
        default=1.01, gt=0, description="loss ratio that counts as robust (reference only)"
    )
    alphas: int = Field(default=11, ge=2, description="rewinding steps from init (0) to final (1)")
    sigmas: int = Field(default=11, ge=2, description="noise scales (grid points)")
    seeds: Literal["first", "all"] = Field(
        default="all",
        description="seeds whose criticality is searched (all: the finding is tested across "
        "seeds; first: the paper's one model per arm, at 1/n of the cost; rewinding: all)",
    )
    n_bootstrap: int = Field(
        default=1000,
        ge=0,
        description="bootstrap resamples over the examples: rewinding, criticality (exact, "
        "from the search's per-example losses) and the paths; 0 = no intervals",
    )
    max_examples: int | None = Field(default=1024, ge=1, description="training examples used")
    path_points: int = Field(default=6, ge=2, description="points along each path of the unit")
    path_sigmas: list[float] = Field(default=[0.0, 0.05, 0.1, 0.2], min_length=1)
    path_module: str | None = Field(
        default=None,
        description="the unit whose rewinding paths are drawn; None = the module map's "
        "first unit (conv1 for a ResNet)",
    )

    @model_validator(mode="after")
    def _increasing_span(self) -> CriticalitySettings:
        low, high = self.sigma_span
        if not 0 < low < high:
            raise ValueError(f"sigma_span must be 0 < low < high (got {list(self.sigma_span)})")
        return self
