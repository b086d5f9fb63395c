"""The table of `--method` values: each method described by the parts it is made of.

Config validation, model construction and the losses read this table (never the method's name),
so a new method is one entry here. Pure Python: no TensorFlow.

Parts:
  masking          the FeatureMasker pattern of the two SSL views (`augment.MASKING_PATTERNS`):
                   "cfm" correlated, "rfm" random complementary, "rfm_no_compl" random
                   independent, "none" no masking; None = no masked views.
  value_dropout    the masked views also drop multi-hot values (--dropout_rate).
  feature_dropout  feature dropout on the supervised item tower (the `fd` baseline).
  fd_ssl           an SSL task on two feature-dropout views (the earlier paper's FD-SSL).
  fm               an SSL task on two fixed feature sets, each with its own head (--fm_features).
  spread_out       the spread-out regulariser on the uniform items (--so_loss).
"""

from __future__ import annotations

import dataclasses

# Training flags only one part reads (checked where model/two_tower.py reads them): a method without the
# part trains the same whatever they hold, so a new default of one of them does not make its
# recorded runs stale (experimentation/keys.py).
_FIELDS_OF_PART = {
    "masking": ("ssl_id_view",),
    "cfm": ("mi_normalization", "cfm_exclude_id"),
    "spread_out": ("so_loss",),
    "fm": ("fm_features", "fm_hidden_layers"),
}


@dataclasses.dataclass(frozen=True)
class Method:
    name: str
    description: str
    masking: str | None = None
    value_dropout: bool = False
    feature_dropout: bool = False
    fd_ssl: bool = False
    fm: bool = False
    spread_out: bool = False

    @property
    def has_auxiliary_loss(self) -> bool:
        """Whether alpha weighs anything: an SSL task or the spread-out regulariser."""
        return self.masking is not None or self.fd_ssl or self.fm or self.spread_out

    @property
    def uses_feature_dropout(self) -> bool:
        """Whether the model needs a FeatureDropout layer (fd or fd_ssl)."""
        return self.feature_dropout or self.fd_ssl

    @property
    def unread_fields(self) -> tuple[str, ...]:
        """Training flags this method never reads (those of the parts it lacks)."""
        has = {
            "masking": self.masking is not None,
            "cfm": self.masking == "cfm",
            "spread_out": self.spread_out,
            "fm": self.fm,
        }
        return tuple(f for part, fields in _FIELDS_OF_PART.items() if not has[part] for f in fields)

    @property
    def needs_dropout_rate(self) -> bool:
        """Dropout is (part of) what the method is, so --dropout_rate=0 would leave it empty."""
        return (
            self.feature_dropout or self.fd_ssl or (self.value_dropout and self.masking == "none")
        )


_TABLE = (
    Method("baseline", "two towers only"),
    Method("fd", "feature dropout on the supervised item tower", feature_dropout=True),
    Method("so", "spread-out regulariser on the uniform items", spread_out=True),
    Method(
        "cfm",
        "SSL, correlated feature masking + value dropout (the paper)",
        masking="cfm",
        value_dropout=True,
    ),
    Method("rfm", "SSL, random complementary masks", masking="rfm", value_dropout=True),
    Method(
        "rfm_no_compl",
        "SSL, random independent masks",
        masking="rfm_no_compl",
        value_dropout=True,
    ),
    Method("cfm_no_dropout", "SSL, correlated feature masking only", masking="cfm"),
    Method("no_masking", "SSL, value dropout only", masking="none", value_dropout=True),
    Method("fm", "SSL, fixed complementary feature sets with separate heads", fm=True),
    Method("fd_ssl", "SSL, two feature-dropout views (earlier paper)", fd_ssl=True),
    Method("fd_ssl+fm", "fd_ssl and fm together", fd_ssl=True, fm=True),
)
METHODS: dict[str, Method] = {m.name: m for m in _TABLE}
NAMES = tuple(METHODS)


def get(name: str) -> Method:
    """The method called `name`; ValueError naming the flag and the choices otherwise."""
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"--method must be one of {list(NAMES)}, got {name!r}") from None


def help_text() -> str:
    """The --method flag's help: one clause per method."""
    return ". ".join(f"{m.name}: {m.description}" for m in _TABLE) + "."
