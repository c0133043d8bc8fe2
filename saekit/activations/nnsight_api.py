"""The nnsight seam: the only module in saekit that imports nnsight.

Everything saekit does to a model goes through here: load it (a hub name, a local folder, or any
`torch.nn.Module`), find a hook point by its dotted module path, read the activations there, and
run the model with them replaced. A new nnsight release should only ever need edits in this file.

Traces are written in this file on purpose: nnsight compiles each ``with model.trace(...)`` block
from its source, so the blocks must live in a real file, not in `exec`'d strings.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import os
import warnings
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from saekit.errors import InputError

Side = Literal["output", "input"]
SIDES: tuple[str, ...] = ("output", "input")
ModelLike = Any  # a loaded nnsight model, a hub name, a model folder, or a torch.nn.Module

# Architecture-name endings that mean "this checkpoint predicts the next token".
_CAUSAL_ARCH_SUFFIXES = ("ForCausalLM", "LMHeadModel")


class UnknownHookError(InputError):
    """A hook path that names no module of the model; the message lists the closest real paths."""


class ModelNotFoundError(FileNotFoundError):
    """A model argument that is neither an existing model folder nor a loadable hub name."""


class PickleWeightsError(InputError):
    """A checkpoint whose weights exist only as pickle files: refused, since unpickling can run code."""


class RemoteCodeError(InputError):
    """A checkpoint that needs its own Python code to load, refused unless trust_remote_code=True."""


# --- loading --------------------------------------------------------------------------------------


Remote = bool | Literal["local"]
"""Where a model's forwards run: False here; True on NDIF through nnsight's remote execution (the weights stay there:
only the config and tokenizer load here); "local": nnsight's dry run of the remote path (each trace serialized and
run here with saekit's modules hidden, as a server would), which checks a trace would run remotely."""

_REMOTE: weakref.WeakKeyDictionary[torch.nn.Module, Remote] = weakref.WeakKeyDictionary()


class RemoteUnavailableError(InputError):
    """NDIF could not be reached, or refused the request."""


def remote_mode(model) -> Remote:
    """How `model` runs its forwards (see `Remote`)."""
    return _REMOTE.get(underlying_module(model), False)


def ndif_api_key() -> str | None:
    """The NDIF API key nnsight will send: NDIF_API_KEY, else the one saved in nnsight's config."""
    import nnsight

    return os.environ.get("NDIF_API_KEY") or getattr(nnsight.CONFIG.API, "APIKEY", None)


def _reaching_remote(fn: Callable) -> Callable:
    """Turn a remote run's network failure into one clear error (a local model's errors pass as they are)."""

    @functools.wraps(fn)
    def run(model, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(model, *args, **kwargs)
        except OSError as error:  # ConnectionError and TimeoutError among them
            if remote_mode(model) is not True:
                raise
            import nnsight

            raise RemoteUnavailableError(
                f"NDIF at {nnsight.CONFIG.API.HOST} could not run the request ({type(error).__name__}: {error}): check "
                "the network and NDIF_API_KEY, or load the model here (drop --remote)") from error

    return run


def load_model(model: ModelLike, *, device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
               trust_remote_code: bool = False, remote: Remote = False):
    """An nnsight model in eval mode: a hub name or folder → TransformersModel, a module → NNsight.

    Causal LMs load with their LM head (so losses can be computed); checkpoints saved without one
    (BERT-style encoders) load as the bare `AutoModel`. An already-loaded nnsight model passes through.
    A checkpoint's own Python code (`auto_map` in its config) runs only with trust_remote_code=True.
    remote=True runs every forward on NDIF (a hub name NDIF serves; the API key from NDIF_API_KEY); "local" runs
    nnsight's dry run of that path here (see `Remote`).
    """
    import nnsight

    if remote is not False:
        return _load_remote(model, remote, trust_remote_code)

    with warnings.catch_warnings():
        # BERT-style modules named `output` get another attribute name; hook paths here resolve them anyway.
        warnings.filterwarnings("ignore", message=".*nnsight already serves.*")
        if isinstance(model, nnsight.Envoy):
            wrapped = model
        elif isinstance(model, torch.nn.Module):
            wrapped = nnsight.NNsight(model.to(dtype) if dtype is not None else model)
        elif isinstance(model, (str, os.PathLike)):
            wrapped = _load_pretrained(str(model), dtype, trust_remote_code)
        else:
            raise InputError(
                f"cannot load a model from {type(model).__name__}; pass a Hugging Face hub name, "
                "a model folder, or a torch.nn.Module"
            )
    if remote_mode(wrapped) is not True:  # a model run on NDIF has no weights here to move
        wrapped.to(torch.device(device))
    underlying_module(wrapped).eval()
    return wrapped


def _load_remote(model: ModelLike, remote: Remote, trust_remote_code: bool):
    """A model whose forwards run through nnsight's remote path: on NDIF, its weights never loaded here (True), or
    the dry run of that path on a model loaded here ("local")."""
    from nnsight.modeling.transformers import TransformersModel
    from transformers import AutoTokenizer

    if remote not in (True, "local"):
        raise InputError(f"remote={remote!r}: use True (NDIF), 'local' (a dry run here) or False")
    if not isinstance(model, (str, os.PathLike)):
        raise InputError("a remote model is named by its Hugging Face hub name (NDIF runs its own copy): pass the "
                         "name, not a loaded module")
    if remote is True and Path(model).expanduser().exists():
        raise InputError(f"{model} is a folder here, and NDIF runs the models it hosts by their Hugging Face hub "
                         "name: pass the hub name with --remote (or remote='local' to dry-run the remote path here)")
    if remote is True and not ndif_api_key():
        raise RemoteUnavailableError("remote execution on NDIF needs an API key: set NDIF_API_KEY (NDIF gives one "
                                     "on sign-up), or drop --remote to load the model here")
    if remote == "local":
        wrapped = load_model(model, trust_remote_code=trust_remote_code)
    else:
        config = _read_config(str(model), trust_remote_code)
        task = "text-generation" if _is_causal_lm(config) else "feature-extraction"
        tokenizer = AutoTokenizer.from_pretrained(str(model), trust_remote_code=trust_remote_code)
        wrapped = TransformersModel(str(model), task=task, dispatch=False, tokenizer=tokenizer,
                                    trust_remote_code=trust_remote_code)
    _REMOTE[underlying_module(wrapped)] = remote
    return wrapped


def _load_pretrained(name: str, dtype: torch.dtype | None, trust_remote_code: bool):
    from nnsight.modeling.transformers import TransformersModel

    config = _read_config(name, trust_remote_code)
    task = "text-generation" if _is_causal_lm(config) else "feature-extraction"
    kwargs: dict[str, Any] = {"dtype": dtype} if dtype is not None else {}
    folder = Path(name).expanduser()
    try:
        return TransformersModel(str(folder) if folder.exists() else name, task=task, dispatch=True,
                                 trust_remote_code=trust_remote_code, use_safetensors=True, **kwargs)
    except (ValueError, OSError) as error:
        if _needs_remote_code(error, trust_remote_code):
            raise _remote_code_error(name) from error
        if "no file named model.safetensors" in str(error):
            raise PickleWeightsError(
                f"model {name!r} has no safetensors weights (only pickle files such as pytorch_model.bin), and "
                "saekit never unpickles: convert it once where you trust it (model.save_pretrained(folder, "
                "safe_serialization=True)) and pass that folder, or pass a torch.nn.Module you loaded yourself"
            ) from error
        raise


def _needs_remote_code(error: Exception, trust_remote_code: bool) -> bool:
    """Whether transformers refused to load because the checkpoint's own code was not trusted."""
    return not trust_remote_code and "trust_remote_code" in str(error)


def _remote_code_error(name: str) -> RemoteCodeError:
    return RemoteCodeError(
        f"model {name!r} needs to run its own Python code to load (auto_map in its config): pass "
        "--trust-remote-code (Python: trust_remote_code=True) only if you trust that code"
    )


def _read_config(name: str, trust_remote_code: bool = False):
    """The checkpoint's config, or a clear error saying what to pass instead."""
    from transformers import AutoConfig

    path = Path(name).expanduser()
    # Hub names are "name" or "org/name"; anything else that does not exist is a mistyped folder.
    looks_like_path = path.is_absolute() or name.startswith((".", "~")) or name.count("/") > 1
    if path.exists() and not (path / "config.json").is_file():
        raise ModelNotFoundError(
            f"model folder {name!r} has no config.json; pass a folder written by save_pretrained "
            "or a Hugging Face hub name"
        )
    if not path.exists() and looks_like_path:
        raise ModelNotFoundError(
            f"model folder {name!r} does not exist; pass an existing model folder or a Hugging Face hub name"
        )
    try:
        return AutoConfig.from_pretrained(str(path) if path.exists() else name, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as error:
        if _needs_remote_code(error, trust_remote_code):
            raise _remote_code_error(name) from error
        raise ModelNotFoundError(
            f"cannot load model {name!r} (neither a model folder nor a reachable hub name): "
            f"{str(error).splitlines()[0]}"
        ) from error


def _is_causal_lm(config) -> bool:
    """Whether the checkpoint has a next-token head, read from the architectures it was saved as."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    names = getattr(config, "architectures", None) or []
    if names:
        return any(name.endswith(_CAUSAL_ARCH_SUFFIXES) for name in names)
    return config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and not getattr(
        config, "is_encoder_decoder", False
    )


def underlying_module(model) -> torch.nn.Module:
    """The torch module an nnsight model wraps (a bare torch module: itself)."""
    return model if isinstance(model, torch.nn.Module) and not hasattr(model, "_module") else model._module


def context_length(model) -> int | None:
    """The longest context the model's config allows (GPT-2's n_positions, others' max_position_embeddings), or
    None where its config names none."""
    config = getattr(underlying_module(model), "config", None)
    for key in ("n_positions", "max_position_embeddings"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def model_name(model) -> str | None:
    """The hub name or (absolute) folder the model was loaded from; None for a bare module."""
    repo_id = getattr(model, "repo_id", None)
    if repo_id is None:
        return None
    path = Path(repo_id).expanduser()
    return str(path.resolve()) if path.exists() else repo_id


def model_device(model) -> torch.device:
    """The device of the model's first parameter (CPU for a parameter-free module)."""
    first = next(underlying_module(model).parameters(), None)
    return first.device if first is not None else torch.device("cpu")


def get_tokenizer(model):
    """The model's Hugging Face tokenizer, or None when it has none that can encode text.

    A checkpoint saved without tokenizer files gets a placeholder from transformers that knows only
    its special tokens; that counts as no tokenizer.
    """
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None or len(tokenizer) <= len(set(tokenizer.all_special_ids)):
        return None
    return tokenizer


def has_lm_head(model) -> bool:
    """Whether the model's output carries next-token logits (a Hugging Face model with an LM head)."""
    module = underlying_module(model)
    get_head = getattr(module, "get_output_embeddings", None)
    return callable(get_head) and get_head() is not None


# --- hook points ----------------------------------------------------------------------------------


def module_paths(model) -> list[str]:
    """Every dotted module path of the model, in module order (ModuleList entries by index)."""
    names = underlying_module(model).named_modules(remove_duplicate=False)
    return [name for name, _ in names if name]


def check_hook(model, hook: str) -> None:
    """Raise UnknownHookError, listing the closest real module paths, when `hook` names no module."""
    paths = module_paths(model)
    if hook in paths:
        return
    close = difflib.get_close_matches(hook, paths, n=5, cutoff=0.4)
    hint = f"closest module paths: {', '.join(close)}" if close else f"e.g. {', '.join(paths[:5])}"
    raise UnknownHookError(f"no module at hook path {hook!r}; {hint}")


def _envoy(model, hook: str):
    """The nnsight envoy of the module at `hook` (works for modules nnsight renames, like BERT's `output`)."""
    check_hook(model, hook)
    target = underlying_module(model).get_submodule(hook)
    return next(envoy for envoy in model.modules() if envoy._module is target)


def _check_side(side: str) -> None:
    if side not in SIDES:
        raise InputError(f"side must be one of {SIDES}, got {side!r}")


def _first_tensor(value: Any) -> Tensor:
    """The activation tensor at a hook: the value itself, or the first item of a tuple output."""
    if isinstance(value, Tensor):
        return value
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], Tensor):
        return value[0]
    raise InputError(f"the hook's value is a {type(value).__name__}, not a tensor; hook a submodule")


def _with_first(value: Any, tensor: Tensor) -> Any:
    """`value` with its activation tensor swapped for `tensor` (keeps the rest of a tuple)."""
    if isinstance(value, Tensor):
        return tensor
    return type(value)([tensor, *value[1:]])


# --- running --------------------------------------------------------------------------------------


def vocab_size(model) -> int | None:
    """Rows of the model's input embedding (else its config's vocab_size); None when neither is known."""
    module = underlying_module(model)
    get_embeddings = getattr(module, "get_input_embeddings", None)
    embeddings = get_embeddings() if callable(get_embeddings) else None
    if isinstance(embeddings, torch.nn.Embedding):
        return embeddings.num_embeddings
    size = getattr(getattr(module, "config", None), "vocab_size", None)
    return size if isinstance(size, int) else None


def check_token_ids(model, input_ids: Tensor) -> None:
    """Raise InputError when an id is negative or past the model's vocabulary (one min/max)."""
    if input_ids.numel() == 0 or input_ids.is_floating_point():
        return
    size = vocab_size(model)
    low, high = (int(v) for v in torch.aminmax(input_ids))
    if low < 0 or (size is not None and high >= size):
        bad = low if low < 0 else high
        vocab = f"the model's vocabulary of {size} ids (0..{size - 1})" if size else "the model's vocabulary"
        raise InputError(
            f"token id {bad} is outside {vocab}: tokenize with the model's own tokenizer "
            "(are the tokenizer or the token file made for another model?)"
        )


def _forward_kwargs(model, input_ids: Tensor, attention_mask: Tensor | None) -> dict[str, Tensor]:
    """Keyword inputs for one forward, on the model's device; a plain module gets a mask only if it takes one."""
    check_token_ids(model, input_ids)
    remote = remote_mode(model)
    device = torch.device("cpu") if remote else model_device(model)  # a remote run ships its inputs
    kwargs: dict[str, Any] = {"input_ids": input_ids.to(device)}
    if attention_mask is not None and _accepts_mask(model):
        kwargs["attention_mask"] = attention_mask.to(device)
    if remote:
        kwargs["remote"] = remote
    return kwargs


def _accepts_mask(model) -> bool:
    params = inspect.signature(underlying_module(model).forward).parameters
    return "attention_mask" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _logits(output: Any) -> Tensor:
    """Next-token logits from a model output (a ModelOutput, a tuple, or a tensor)."""
    if hasattr(output, "logits"):
        return output.logits
    return _first_tensor(output)


Site = tuple[str, Side]
"""A place activations are read: (module path, "output" or "input")."""


_FORWARD_ORDERS: weakref.WeakKeyDictionary[torch.nn.Module, dict[tuple[Site, ...], list[int]]] = \
    weakref.WeakKeyDictionary()


def _in_forward_order(model, sites: Sequence[Site], kwargs: dict[str, Tensor]) -> list[int]:
    """Indices of `sites` in the order a forward reaches them: nnsight hands out values in the order the model
    computes them, which is not the modules' order (GPT-2's MLP registers c_proj before act; a block's output comes
    after its children's). Found once per model and sites by watching a forward of one token with torch hooks."""
    module = underlying_module(model)
    known = _FORWARD_ORDERS.setdefault(module, {})
    key = tuple(sites)
    if key not in known:
        seen: list[int] = []
        handles = []
        for i, (hook, side) in enumerate(sites):
            sub = module.get_submodule(hook)
            note = lambda *_, i=i: seen.append(i) if i not in seen else None  # noqa: E731
            handles.append(sub.register_forward_pre_hook(note) if side == "input" else sub.register_forward_hook(note))
        device = model_device(model)  # the meta device for a model run on NDIF: the order needs no weights
        try:
            with torch.no_grad():
                module(**{name: value[:1, :1].to(device) for name, value in kwargs.items() if name != "remote"})
        finally:
            for handle in handles:
                handle.remove()
        known[key] = seen + [i for i in range(len(sites)) if i not in seen]
    return known[key]


@_reaching_remote
@torch.no_grad()
def read_sites(model, input_ids: Tensor, attention_mask: Tensor | None, sites: Sequence[Site],
               logits: bool = False) -> tuple[list[Tensor], Tensor | None]:
    """One forward: the activations [batch, seq, d] at each site (in the order given) and, with `logits`, the logits
    [batch, seq, vocab]; without them the forward stops right after the last site (no wasted compute). One site
    takes `get_activations` or `activations_and_logits`."""
    if len(sites) == 1:
        if logits:
            acts, out = activations_and_logits(model, input_ids, attention_mask, *sites[0])
            return [acts], out
        return [get_activations(model, input_ids, attention_mask, *sites[0])], None
    for _, side in sites:
        _check_side(side)
    envoys = [_envoy(model, hook) for hook, _ in sites]
    saved: dict[int, Any] = {}
    kwargs = _forward_kwargs(model, input_ids, attention_mask)
    order = _in_forward_order(model, sites, kwargs)
    with model.trace(**kwargs) as tracer:
        for i in order:
            value = envoys[i].output if sites[i][1] == "output" else envoys[i].input
            saved[i] = _first_tensor(value).save()
        if logits:
            output = model.output.save()
        else:
            tracer.stop()
    return [saved[i] for i in range(len(sites))], _logits(output) if logits else None


@_reaching_remote
@torch.no_grad()
def get_activations(
    model, input_ids: Tensor, attention_mask: Tensor | None, hook: str, side: Side = "output"
) -> Tensor:
    """Activations at `hook`: [batch, seq, d]. The forward stops right after the hook (no wasted compute)."""
    _check_side(side)
    envoy = _envoy(model, hook)
    with model.trace(**_forward_kwargs(model, input_ids, attention_mask)) as tracer:
        value = envoy.output if side == "output" else envoy.input
        acts = _first_tensor(value).save()
        tracer.stop()
    return acts


@_reaching_remote
@torch.no_grad()
def activations_and_logits(
    model, input_ids: Tensor, attention_mask: Tensor | None, hook: str, side: Side = "output"
) -> tuple[Tensor, Tensor]:
    """One clean forward: the activations at `hook` [batch, seq, d] and the logits [batch, seq, vocab]."""
    _check_side(side)
    envoy = _envoy(model, hook)
    with model.trace(**_forward_kwargs(model, input_ids, attention_mask)):
        value = envoy.output if side == "output" else envoy.input
        acts = _first_tensor(value).save()
        output = model.output.save()
    return acts, _logits(output)


@_reaching_remote
def spliced_logits(
    model,
    input_ids: Tensor,
    attention_mask: Tensor | None,
    hook: str,
    replace: Callable[[Tensor], Tensor],
    side: Side = "output",
    *,
    grad: bool = False,
) -> Tensor:
    """Logits [batch, seq, vocab] with the hook's activations [batch, seq, d] replaced by `replace(acts)`; with
    `grad`, autograd stays on so gradients reach whatever `replace` computes from (a decoder's weights)."""
    _check_side(side)
    envoy = _envoy(model, hook)
    with torch.set_grad_enabled(grad), model.trace(**_forward_kwargs(model, input_ids, attention_mask)):
        if side == "output":
            envoy.output = _with_first(envoy.output, replace(_first_tensor(envoy.output)))
        else:
            envoy.input = replace(_first_tensor(envoy.input))
        output = model.output.save()
    return _logits(output)


# --- generation -----------------------------------------------------------------------------------


@_reaching_remote
@torch.no_grad()
def clean_logits(model, input_ids: Tensor, attention_mask: Tensor | None) -> Tensor:
    """Logits [batch, seq, vocab] of an unmodified forward."""
    with model.trace(**_forward_kwargs(model, input_ids, attention_mask)):
        output = model.output.save()
    return _logits(output)


def _generate_kwargs(model, input_ids: Tensor, attention_mask: Tensor | None, max_new_tokens: int,
                     extra: dict[str, Any]) -> dict[str, Any]:
    """Inputs for `model.generate`: exactly `max_new_tokens` new tokens, greedy unless told otherwise."""
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    kwargs = {**_forward_kwargs(model, input_ids, attention_mask), "max_new_tokens": max_new_tokens,
              "min_new_tokens": max_new_tokens, "do_sample": False, **extra}
    if kwargs.get("pad_token_id") is None:
        config = underlying_module(model).config
        pad = getattr(config, "pad_token_id", None)
        kwargs["pad_token_id"] = pad if pad is not None else getattr(config, "eos_token_id", None)
    return kwargs


@_reaching_remote
@torch.no_grad()
def generate(
    model,
    input_ids: Tensor,
    attention_mask: Tensor | None = None,
    *,
    max_new_tokens: int = 20,
    hook: str | None = None,
    replace: Callable[[Tensor], Tensor] | None = None,
    side: Side = "output",
    **generate_kwargs: Any,
) -> Tensor:
    """Token ids [batch, prompt + max_new_tokens] from `model.generate` (greedy by default), with the
    activations at `hook` replaced by `replace(acts)` in every forward: the prompt's and each new token's.

    Exactly `max_new_tokens` are generated (EOS does not stop early), so every step gets the edit.
    Extra keyword arguments go to Hugging Face's `generate` (e.g. do_sample=True, temperature=0.8).
    """
    if max_new_tokens < 1:
        raise InputError(f"max_new_tokens must be positive, got {max_new_tokens}")
    if (replace is None) != (hook is None):
        raise InputError("pass both hook and replace (to edit activations while generating), or neither")
    kwargs = _generate_kwargs(model, input_ids, attention_mask, max_new_tokens, generate_kwargs)
    if replace is None:
        with model.generate(**kwargs) as tracer:
            ids = tracer.result.save()
        return ids
    _check_side(side)
    envoy = _envoy(model, hook)
    with model.generate(**kwargs) as tracer:
        for _ in tracer.iter[:max_new_tokens]:
            if side == "output":
                envoy.output = _with_first(envoy.output, replace(_first_tensor(envoy.output)))
            else:
                envoy.input = replace(_first_tensor(envoy.input))
        ids = tracer.result.save()
    return ids
