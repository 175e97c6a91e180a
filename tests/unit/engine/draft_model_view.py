"""A stand-in for the runner's draft model as the scheduler sees it (engine/drafts.py's
DraftModelView): its measured costs, and how far its cache lags behind each request."""

from collections.abc import Sequence
from dataclasses import dataclass, field

from sluice.speculative.draft_cost import DraftCost


@dataclass
class StubDraftModel:
    cost: DraftCost = field(default_factory=DraftCost)
    num_missing: int = 0
    """Positions every request's draft cache lacks."""

    def missing_tokens(self, block_ids: Sequence[int], end: int) -> int:
        return self.num_missing
