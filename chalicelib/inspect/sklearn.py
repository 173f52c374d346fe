"""scikit-learn inspector: ``.skops`` files of skops' default types in process, everything else in a sandbox.

A pickle runs code when it is opened, and so may a ``.skops`` file whose config trusts extra types: both go
to the ``Sandbox`` port and never load here. A ``.skops`` file of default-trusted types only is opened
with skops' safe loader in process. Nothing heavy (numpy, sklearn, skops) is imported at module level.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from chalicelib.core.errors import ArtifactError, ConfigError, UnsafeArtifact
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
    if untrusted and config.runtime == "onnx":  # trusted or not, such a file never loads here
        raise _no_conversion(rel, f"holds types skops does not trust by default ({_names(untrusted)})")
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
    return contract_from_estimator(_load_default_types(sio, path, rel), rel=rel, fmt="skops")


def _load_default_types(sio: Any, path: Path, rel: str) -> Any:
    try:
        return sio.load(path, trusted=None)
    except Exception as exc:
        raise ArtifactError(
            f"{rel} could not be loaded by skops: {_short(exc)}",
            hint="install the packages its types come from, or save it again",
        ) from None


def _names(types: list[str]) -> str:
    return ", ".join(t[:120] for t in types[:5]) + (", ..." if len(types) > 5 else "")


def _no_conversion(rel: str, why: str) -> ConfigError:
    """``runtime: onnx`` converts the estimator in the deploy service, where only a .skops file of skops'
    default types is ever opened: whatever needs code to open goes to the sandbox probe, never here (and the
    probe does not convert)."""
    return ConfigError(
        f"runtime: onnx cannot convert {rel}: it {why}, so it is only ever opened in the sandbox, and the "
        "conversion loads the estimator in the deploy service",
        path="runtime",
        hint="runtime: onnx takes a .skops file (skops.io.dump) of the types skops trusts by default - "
        "linear models, SVMs, naive Bayes, scalers and pipelines of them; not yet trees, k-nearest "
        "neighbours or sgd/adam MLPs, whose fitted objects need trusted_types - or remove runtime: onnx to "
        "serve the model natively",
    )


def load_for_conversion(path: Path, rel: str) -> Any:
    """The estimator of a .skops file of skops' default types, to convert it (``runtime: onnx``): the one
    kind of artifact the control plane loads. Anything else is refused, never opened."""
    import skops.io as sio

    if path.suffix.lower() != ".skops":
        raise _no_conversion(rel, "is a pickle (loading it can run arbitrary code)")
    try:
        untrusted = sio.get_untrusted_types(file=path)
    except Exception as exc:
        raise ArtifactError(f"{rel} is not a valid .skops file: {_short(exc)}") from None
    if untrusted:
        raise _no_conversion(rel, f"holds types skops does not trust by default ({_names(untrusted)})")
    return _load_default_types(sio, path, rel)


def inspect_pickle(path: Path, rel: str, config: ModelConfig, sandbox: Sandbox) -> NativeContract:
    """Unpickling runs arbitrary code, so it only ever happens in the sandbox."""
    if config.runtime == "onnx":
        raise _no_conversion(rel, "is a pickle (loading it can run arbitrary code)")
    if not config.allow_pickle:
        raise UnsafeArtifact(
            f"{rel} is a pickle: loading it can run arbitrary code, so it is not opened by default",
            hint="convert it to .skops (skops.io.dump) or set allow_pickle: true in modelport.yaml",
        )
    return sandbox.probe(ProbeRequest(config=config, artifact=path, rel=rel, format="pickle"))
