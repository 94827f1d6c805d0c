"""LoRA adapters per job: loaded into a pipeline once, kept in a small LRU of slots, activated per call.

An adapter is named by a job and declared by the server (`GENFLEET_ADAPTERS`: name to source). A source is a
local file or folder, an object of this storage (`s3://...` or a key), or `hf://owner/repo[/file]`, a Hugging
Face repo read from the local cache only unless `GENFLEET_ADAPTER_DOWNLOAD` allows a download.

Each pipeline has `GENFLEET_ADAPTER_SLOTS` slots. An adapter takes a free slot, or the least recently used
one's; a call activates exactly the adapters its group asked for, at their weights, and none for a group that
asked for none (batching groups jobs by adapter set, so a call never mixes two). A compiled pipeline swaps an
adapter into a slot in place (diffusers' hot-swap), so that changing adapters does not compile again; others
delete the old adapter and load the new one.

diffusers' pipeline-level LoRA API is used where the pipeline has it (Stable Diffusion's: it also loads a LoRA's
text-encoder part); otherwise the denoiser's own (the embedded pipeline's UNet).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from pathlib import Path
from typing import Any

from safetensors.torch import load as load_safetensors
from safetensors.torch import load_file

from genfleet.shared import metrics
from genfleet.shared.storage import Storage
from genfleet.workers.fastpath import denoiser

log = logging.getLogger(__name__)
HOTSWAP_MAX_RANK = 64  # a compiled pipeline's slots are sized for adapters of up to this rank
HUB = "hf://"


class AdapterError(RuntimeError):
    """An adapter that could not be found or loaded; the jobs naming it fail with this reason."""


def _source(source: str, storage: Storage, download: bool) -> tuple[Any, dict[str, Any]]:
    """What diffusers' loaders take for `source` (a state dict, a folder or a repo id), and their options."""
    if source.startswith(HUB):  # hf://owner/name, or hf://owner/name/file.safetensors
        owner, name, *weight = source.removeprefix(HUB).split("/", 2)
        options = {"local_files_only": not download, **({"weight_name": weight[0]} if weight else {})}
        return f"{owner}/{name}", options
    path = Path(source)
    if path.is_file():
        return load_file(path), {}
    if path.is_dir():
        return str(path), {}
    key = storage.key_of(source)
    if key is not None and storage.exists(key):
        return load_safetensors(storage.get(key)), {}
    raise AdapterError(f"adapter source {source!r}: no such file, folder or object in storage")


class AdapterSlots:
    """The adapters loaded into one pipeline (kept on the pipeline, so an evicted model takes them along)."""

    def __init__(self, pipe: Any, slots: int, hotswap: bool) -> None:
        self.pipe, self.slots, self.hotswap = pipe, slots, hotswap
        self.held: OrderedDict[str, str] = OrderedDict()  # adapter name -> slot, least recently used first
        self.api = pipe if hasattr(pipe, "load_lora_weights") else denoiser(pipe)
        self.active = False
        if hotswap and hasattr(pipe, "enable_lora_hotswap"):
            pipe.enable_lora_hotswap(target_rank=HOTSWAP_MAX_RANK)

    @classmethod
    def of(cls, pipe: Any, slots: int, hotswap: bool) -> AdapterSlots:
        found: AdapterSlots | None = getattr(pipe, "_genfleet_adapters", None)
        if found is None:
            found = pipe._genfleet_adapters = cls(pipe, slots, hotswap)
        return found

    def _load(self, name: str, source: Any, options: dict[str, Any]) -> None:
        if len(self.held) < self.slots:
            slot, swap = f"slot{len(self.held)}", False
        else:
            old, slot = self.held.popitem(last=False)
            swap = self.hotswap
            if not swap:
                self.api.delete_adapters(slot)
            log.info("adapter %s leaves slot %s for %s", old, slot, name)
        if self.api is self.pipe:
            self.pipe.load_lora_weights(source, adapter_name=slot, hotswap=swap, **options)
        else:
            self.api.load_lora_adapter(source, adapter_name=slot, prefix=_prefix(self.pipe), hotswap=swap, **options)
        self.held[name] = slot

    def activate(self, wanted: tuple[tuple[str, float], ...], model: str, sources: dict[str, str],
                 storage: Storage, download: bool) -> None:
        """Makes exactly `wanted` ((name, weight) pairs) active for the next call."""
        if not wanted:
            if self.active:
                self.api.disable_lora()
                self.active = False
            return
        if len(wanted) > self.slots:
            raise AdapterError(f"{len(wanted)} adapters in one job; this worker holds {self.slots} (ADAPTER_SLOTS)")
        for name, _ in wanted:
            if name in self.held:
                self.held.move_to_end(name)
                continue
            if name not in sources:
                raise AdapterError(f"adapter {name!r} is not declared on this worker (GENFLEET_ADAPTERS)")
            try:
                self._load(name, *_source(sources[name], storage, download))
            except (OSError, ValueError, KeyError, RuntimeError) as e:
                raise AdapterError(f"adapter {name!r} did not load: {type(e).__name__}: {e}") from e
            metrics.ADAPTER_LOADS.labels(model, name).inc()
        self.api.enable_lora()
        slots, weights = [self.held[n] for n, _ in wanted], [w for _, w in wanted]
        if self.api is self.pipe:
            self.pipe.set_adapters(slots, adapter_weights=weights)
        else:
            self.api.set_adapters(slots, weights=weights)
        self.active = True


def _prefix(pipe: Any) -> str:
    """Where a denoiser's keys sit in a LoRA file (`unet.` or `transformer.`)."""
    return "unet" if getattr(pipe, "unet", None) is not None else "transformer"
