"""What a target produces and a runtime consumes, in memory or as a bundle directory.

A bundle is ``manifest.json`` + the target's text files + ``weights.safetensors``. Runtimes see
only an ``Artifact`` (files, weights, manifest), never compiler objects, so what is checked is what
ships.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from portc.compiler.errors import BundleError
from portc.compiler.weights import WeightStore

MANIFEST = "manifest.json"
WEIGHTS = "weights.safetensors"
BUNDLE_FORMAT = 1


@dataclass
class Artifact:
    target: str
    files: dict[str, str] = field(default_factory=dict)
    weights: WeightStore = field(default_factory=WeightStore)
    manifest: dict[str, Any] = field(default_factory=dict)

    def write(self, out_dir: Path) -> Path:
        """Write the bundle into ``out_dir`` (created if needed); nothing is written elsewhere."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        written = {}
        for name, text in self.files.items():
            if Path(name).name != name:
                raise BundleError(f"artifact file name '{name}' must not contain a path")
            (out_dir / name).write_text(text)
            written[name] = hashlib.sha256(text.encode()).hexdigest()
        self.weights.save(out_dir / WEIGHTS)
        manifest = dict(self.manifest)
        manifest.update({"bundle_format": BUNDLE_FORMAT, "target": self.target,
                         "files": written, "weights": WEIGHTS})
        (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        return out_dir

    @staticmethod
    def read(bundle: Path) -> Artifact:
        bundle = Path(bundle)
        mpath = bundle / MANIFEST
        if not mpath.is_file():
            raise BundleError(f"'{bundle}' is not a portc bundle (no {MANIFEST}); run `portc compile`")
        try:
            manifest = json.loads(mpath.read_text())
        except json.JSONDecodeError as e:
            raise BundleError(f"{mpath} is not valid JSON ({e}); re-run `portc compile`") from e
        if manifest.get("bundle_format") != BUNDLE_FORMAT:
            raise BundleError(f"{mpath}: bundle format {manifest.get('bundle_format')} is not "
                              f"{BUNDLE_FORMAT}; recompile with this portc")
        files = {}
        for name, digest in manifest.get("files", {}).items():
            p = bundle / name
            if Path(name).name != name or not p.is_file():
                raise BundleError(f"bundle file '{name}' listed in the manifest is missing")
            text = p.read_text()
            if hashlib.sha256(text.encode()).hexdigest() != digest:
                raise BundleError(f"bundle file '{name}' was modified after compilation "
                                  "(checksum mismatch); recompile")
            files[name] = text
        weights = WeightStore.load(bundle / manifest.get("weights", WEIGHTS))
        return Artifact(manifest["target"], files, weights, manifest)
