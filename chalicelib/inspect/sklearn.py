"""scikit-learn inspector: ``.skops`` files of skops' default types in process, everything else in a sandbox.

A pickle runs code when it is opened, and so may a ``.skops`` file whose config trusts extra types: both go
to the ``Sandbox`` port and never load here. A ``.skops`` file of default-trusted types only is opened
with skops' safe loader in process. Nothing heavy (numpy, sklearn, skops) is imported at module level.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from chalicelib.core.errors import ArtifactError, UnsafeArtifact
from chalicelib.core.native import NativeContract
from chalicelib.core.probe import ProbeRequest
from chalicelib.runtime.contract import contract_from_estimator

if TYPE_CHECKING:
    from chalicelib.core.config import ModelConfig
    from chalicelib.core.ports import Sandbox


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def inspect_skops(path: Path, rel: str, config: ModelConfig, sandbox: Sandbox) -> NativeContract:
    import skops.io as sio

    try:
        untrusted = sio.get_untrusted_types(file=path)
    except Exception as exc:
        raise ArtifactError(
            f"{rel} is not a valid .skops file (corrupt or not a zip archive): {_short(exc)}",
            hint="save it again with skops.io.dump",
        ) from None
    refused = sorted(set(untrusted) - set(config.trusted_types))
    if refused:
        shown = ", ".join(t[:120] for t in refused[:10]) + (", ..." if len(refused) > 10 else "")
        raise UnsafeArtifact(
            f"{rel} contains types skops does not trust by default: {shown}",
            hint="save the model with scikit-learn's own estimators; trusted_types: may list only "
            "classes of scikit-learn, numpy, scipy, LightGBM and XGBoost",
        )
    if untrusted:  # trusted by the config, not by skops: constructing them is the tenant's code
        return sandbox.probe(ProbeRequest(config=config, artifact=path, rel=rel, format="skops"))
    try:
        est = sio.load(path, trusted=None)
    except Exception as exc:
        raise ArtifactError(
            f"{rel} could not be loaded by skops: {_short(exc)}",
            hint="install the packages its types come from, or save it again",
        ) from None
    return contract_from_estimator(est, rel=rel, fmt="skops")


def inspect_pickle(path: Path, rel: str, config: ModelConfig, sandbox: Sandbox) -> NativeContract:
    """Unpickling runs arbitrary code, so it only ever happens in the sandbox."""
    if not config.allow_pickle:
        raise UnsafeArtifact(
            f"{rel} is a pickle: loading it can run arbitrary code, so it is not opened by default",
            hint="convert it to .skops (skops.io.dump) or set allow_pickle: true in modelport.yaml",
        )
    return sandbox.probe(ProbeRequest(config=config, artifact=path, rel=rel, format="pickle"))
