"""The model bundle: one folder with everything needed to score prompts for new queries.

Written by `cpo fit` (OUT/model) and `cpo run` (RUN/model); read by `cpo optimize` and every other
consumer of a fitted model::

    bundle.json               format, encoder id and prefixes, the embedding settings, data hash, versions
    model.json, model.safetensors   the causal reward model (its provenance names both PCAs)
    query_pca.safetensors, prompt_pca.safetensors   the fitted PCAs (X and T coordinates)
    policy.json               the policy `cpo assign` applies (cpo_engine/policy/policy.py)

Every file serving or `cpo optimize` reads is under a hash: bundle.json under its own ``content_sha256``
(its ``embed`` section decides how texts are embedded), model.json and model.safetensors under the
model's, the PCAs through their fingerprints in model.json, policy.json under its own, and a run's
``search/candidates.parquet`` through the hash policy.json records for it.

Loading checks that the PCAs are the ones the model was fitted in (a bundle assembled from two runs
is refused), through the hashes that no file was edited, and that no process is
writing the bundle's run folder at that moment. :meth:`ModelBundle.representer` checks that the
encoder found at the recorded path is the one the model was fitted with (its identity: a content hash
of the weights and config), not just a model of the same name.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cpo_engine.embedding.config import EmbedConfig
from cpo_engine.exceptions import BusyError, ConfigError, DataError
from cpo_engine.utils import atomic_write_json, filesystem, is_uri, json_default, lock_holder, versions

log = logging.getLogger(__name__)

FORMAT = "cpo-model-bundle/1"
MARKER = "bundle.json"


def content_sha(body: dict[str, Any]) -> str:
    """sha256 of a JSON body as it reads back (canonical: sorted keys, no spaces, floats as JSON writes them; and
    as written: with credentials scrubbed, as atomic_write_json writes every file)."""
    import hashlib

    from cpo_engine.utils import scrub

    canon = json.loads(scrub(json.dumps(body, default=json_default)))
    return hashlib.sha256(json.dumps(canon, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def save_bundle(folder: str | Path, model: Any, reps: Any, embed: EmbedConfig, data_info: dict[str, Any],
                *, keep_residuals: bool = False) -> Path:
    """Write the model, both PCA states and ``bundle.json`` into ``folder``; returns it."""
    from cpo_engine.causal import representation_provenance

    folder = Path(folder)
    prov = representation_provenance(reps)
    model.save(folder, prov | {"data": data_info}, keep_residuals=keep_residuals)
    reps.save(folder)
    info = {"format": FORMAT, "encoder": reps.provenance.get("encoder"),
            "encoder_identity": reps.provenance.get("encoder_identity"),
            "query_prefix": reps.provenance.get("query_prefix"), "prompt_prefix": reps.provenance.get("prompt_prefix"),
            "embed": {"encoder": embed.encoder, "query_prefix": reps.provenance.get("query_prefix"),
                      "prompt_prefix": reps.provenance.get("prompt_prefix")},
            "data": data_info, "versions": versions(),
            "n_prompts": int(len(reps.prompt_ids)), "n_queries": int(len(reps.query_ids))}
    write_info(folder, info)
    return folder


def write_info(folder: str | Path, info: dict[str, Any]) -> Path:
    """Write ``bundle.json`` with its ``content_sha256`` (of the body as it reads back)."""
    body = {k: v for k, v in info.items() if k != "content_sha256"}
    return atomic_write_json(Path(folder) / MARKER, body | {"content_sha256": content_sha(body)})


def check_info(info: Any, path: Path) -> dict[str, Any]:
    """``bundle.json``'s content, refused (a DataError naming it) when it is not an object of this format or
    does not match its hash: an edited ``embed`` section would embed new texts another way than the model's."""
    fix = "rerun `cpo fit` or `cpo run` to rewrite the bundle, or restore it from a copy"
    if not isinstance(info, dict):
        raise DataError("bundle.json is not a JSON object", source=str(path), fix=fix)
    if info.get("format") != FORMAT:
        raise DataError(f"has format {info.get('format')!r}, expected {FORMAT!r}", source=str(path),
                        fix="refit the model with this version (`cpo fit` or `cpo run`)")
    if "content_sha256" not in info:
        raise DataError("no content hash (content_sha256): written by an older version, or edited", source=str(path),
                        fix=fix)
    if info["content_sha256"] != content_sha({k: v for k, v in info.items() if k != "content_sha256"}):
        raise DataError("bundle.json does not match its hash (content_sha256): it was edited or corrupted after it "
                        "was written (its encoder and prefixes decide how new texts are embedded)", source=str(path),
                        fix=fix)
    return info


def resolve(path: str | Path) -> Path:
    """The bundle folder of ``path``: the folder itself, or the ``model/`` folder of a `cpo run` /
    `cpo fit` output folder."""
    p = Path(path)
    for cand in (p, p / "model"):
        if (cand / MARKER).is_file():
            return cand
    raise ConfigError(f"{p} is not a model bundle: no {MARKER} in it or in {p / 'model'}; pass the folder that "
                      "`cpo run --out RUN` or `cpo fit --out OUT` wrote (RUN, OUT or their model/ folder)")


@dataclass
class ModelBundle:
    """A loaded bundle: the causal model, both fitted PCAs and what embedded the texts."""

    path: Path
    model: Any
    query_pca: Any
    prompt_pca: Any
    info: dict[str, Any]

    @classmethod
    def load(cls, path: str | Path) -> "ModelBundle":
        """Load and check a bundle (a bundle folder or a run folder holding one; on an object store too,
        s3:// or gs://: copied to a local temporary folder first, :func:`fetch_run`)."""
        from types import SimpleNamespace

        from cpo_engine.causal import CausalRewardModel, representation_provenance
        from cpo_engine.embedding import TorchPCA

        folder = resolve(fetch_run(path) if is_uri(path) else path)
        for owner in dict.fromkeys((folder, folder.parent)):
            holder = lock_holder(owner)
            if holder:
                raise BusyError(f"the model bundle {folder} is being written by another cpo process ({holder})\n"
                                "  fix: wait for it to finish, then load it")
        try:
            info = json.loads((folder / MARKER).read_text())
        except ValueError as exc:
            raise DataError(f"{folder / MARKER} is not valid JSON: {exc}", fix="rewrite the bundle (`cpo fit`)") from exc
        info = check_info(info, folder / MARKER)
        qpca = TorchPCA.load(folder / "query_pca.safetensors", device="cpu")
        ppca = TorchPCA.load(folder / "prompt_pca.safetensors", device="cpu")
        prov = {"encoder": info.get("encoder"), "encoder_identity": info.get("encoder_identity"),
                "query_prefix": info.get("query_prefix"), "prompt_prefix": info.get("prompt_prefix")}
        expect = representation_provenance(SimpleNamespace(provenance=prov, query_pca=qpca, prompt_pca=ppca))
        model = CausalRewardModel.load(folder, expect=expect)
        return cls(folder, model, qpca, ppca, info)

    def embed_config(self, user: EmbedConfig | None = None) -> EmbedConfig:
        """The user's embedding settings (device, cache, batch size) with the bundle's encoder and prefixes:
        texts must be embedded the way the model's training texts were."""
        user = user or EmbedConfig()
        e = self.info.get("embed", {})
        if user.encoder != EmbedConfig.encoder and user.encoder != e.get("encoder"):
            raise ConfigError(f"embed.encoder={user.encoder!r} but the model bundle {self.path} was fitted on "
                              f"{e.get('encoder')!r} embeddings: drop embed.encoder or refit the model")
        return replace(user, encoder=e.get("encoder", user.encoder), query_prefix=e.get("query_prefix"),
                       prompt_prefix=e.get("prompt_prefix"))

    def check_encoder(self, encoder: Any) -> None:
        """Refuse an encoder whose weights or config differ from the ones the model was fitted with
        (same folder name or model id or not): its vectors live in another space."""
        from cpo_engine.embedding.encoders import encoder_identity

        want = self.info.get("encoder_identity")
        if want is None:
            log.warning("model bundle %s predates encoder identities: the encoder is checked by name only; refit "
                        "to check its weights too", self.path)
            return
        have = encoder_identity(encoder)
        if have != want:
            raise ConfigError(
                f"the encoder {getattr(encoder, 'path', encoder.model_id)} is not the one the model bundle {self.path} "
                f"was fitted with: its weights or config differ (identity {have}, the bundle's {want})\n  fix: point "
                "embed.encoder at the model folder used for fitting, or refit the model with this encoder (`cpo fit`)")

    def representer(self, user: EmbedConfig | None = None) -> Any:
        """A :class:`~cpo_engine.policy.represent.Representer` with the bundle's encoder and prefixes
        (:meth:`embed_config`), after checking that encoder is the model's (:meth:`check_encoder`)."""
        from cpo_engine.policy.represent import Representer

        rep = Representer(self.embed_config(user))
        self.check_encoder(rep.encoder)
        return rep

    def summary(self) -> dict[str, Any]:
        return {"path": str(self.path), "encoder": self.info.get("encoder"), "data": self.info.get("data"),
                "n_prompts": self.info.get("n_prompts"), "n_queries": self.info.get("n_queries")}


def fetch_run(uri: str | Path) -> Path:
    """A local copy of the model bundle (and the searched candidates) of a run or bundle at a URI
    (s3://, gs://, ...): what Ray actors and jobs on other machines load."""
    import tempfile

    import pyarrow.fs as pafs

    from cpo_engine.data.storage import download

    fs, root = filesystem(uri)
    root = root.rstrip("/")
    dst = Path(tempfile.mkdtemp(prefix="cpo_run_"))
    for bundle, run in ((root, None), (f"{root}/model", root)):
        if fs.get_file_info(f"{bundle}/bundle.json").type == pafs.FileType.File:
            download(fs, bundle, dst / "model")
            cands = f"{run}/search/candidates.parquet"
            if run and fs.get_file_info(cands).type == pafs.FileType.File:
                download(fs, cands, dst / "search" / "candidates.parquet", folder=False)
            return dst
    raise ConfigError(f"{uri} is not a model bundle: no bundle.json in it or in its model/ folder")


__all__ = ["ModelBundle", "content_sha", "save_bundle", "write_info", "check_info", "resolve", "FORMAT", "fetch_run"]
