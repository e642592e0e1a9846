"""The ``recon`` command line.

Every user mistake (bad file, unknown name, parameter out of range) ends in one line on stderr and
exit code 2; an internal failure prints one line and exits 1 (``RECON_DEBUG=1`` shows the traceback).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from recon.allocator import retain_freed_memory
from recon.errors import InputError, PluginError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise InputError(f"{self.prog}: {message}")


def _seed(text: str) -> int:
    """A ``--seed`` value: an integer in [0, 2^63)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer below 2^63, got {value}")
    return value


def resolve_device(name: str) -> Any:
    """``auto`` → CUDA when present, else CPU; an unavailable device is an :class:`InputError`."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise InputError(f"unknown device {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError("CUDA was requested but no CUDA device is available")
    return device


def _key_values(items: Sequence[str] | None) -> dict[str, str]:
    out = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InputError(f"expected KEY=VALUE, got {item!r}")
        out[key.strip().replace("-", "_")] = value.strip()
    return out


def _print_entries(entries: list[dict[str, Any]], as_json: bool, columns: tuple[str, ...]) -> None:
    if as_json:
        print(json.dumps(entries, indent=2))
        return
    widths = [max(len(c), *(len(str(e.get(c, ""))) for e in entries)) for c in columns[:-1]]
    header = (c.removesuffix("_text").upper() for c in columns)
    print("  ".join(h.ljust(w) for h, w in zip(header, [*widths, 0], strict=True)).rstrip())
    for e in entries:
        print(
            "  ".join(str(e.get(c, "")).ljust(w) for c, w in zip(columns, [*widths, 0], strict=True)).rstrip()
        )


def cmd_plugins(args: argparse.Namespace) -> int:
    from recon.registry import list_plugins

    infos = [p.as_dict() for p in list_plugins()]
    for info in infos:
        info["hooks_text"] = ", ".join(h.removeprefix("recon_register_") for h in info["hooks"])
    if args.json:
        for info in infos:
            del info["hooks_text"]
    _print_entries(infos, args.json, ("name", "source", "hooks_text"))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from recon.registry import get_registry

    entries = [e.as_dict() for e in get_registry(args.kind).values()]
    for e in entries:
        e["params_text"] = " ".join(f"{k}={v['default']}" for k, v in e["params"].items())
    if args.json:
        for e in entries:
            del e["params_text"]
    _print_entries(entries, args.json, ("name", "plugin", "description", "params_text"))
    return 0


def cmd_reconstruct(args: argparse.Namespace) -> int:
    from recon.outputs import sidecar_paths
    from recon.pipeline import reconstruct_file

    params = _key_values(args.param)
    for name in ("acceleration", "center_fraction", "mask", "seed"):
        value = getattr(args, name)
        if value is not None:
            params[name] = str(value)
    for name in ("tv_lambda", "tikhonov_lambda"):
        value = getattr(args, name)
        if value is not None and not (value >= 0 and value < float("inf")):
            raise InputError(f"--{name.replace('_', '-')} must be a non-negative number, got {value}")
    if args.iterations < 1:
        raise InputError(f"--iterations must be >= 1, got {args.iterations}")
    if args.samples < 2 or not 0 < args.coverage < 1:
        raise InputError("--samples must be at least 2 and --coverage in (0, 1)")
    options = dict(
        operator=args.operator,
        params=params,
        noise=args.noise,
        seed=args.seed or 0,
        method=args.method,
        model_name=args.model,
        device=resolve_device(args.device),
        reader=args.reader,
        tv_lambda=args.tv_lambda,
        tikhonov_lambda=args.tikhonov_lambda,
        iterations=args.iterations,
        uncertainty=args.uncertainty,
        samples=args.samples,
        coverage=args.coverage,
    )
    source = Path(args.input)
    pairs = _paths(source, Path(args.out), None, ".h5", sidecar_paths)
    work = lambda path, out: reconstruct_file(path, out, **options)  # noqa: E731
    return _each(pairs, work, "reconstruct", source.is_dir())


def cmd_sample(args: argparse.Namespace) -> int:
    from recon.pipeline import sample_model

    path, samples = sample_model(
        args.model,
        args.sampler,
        args.samples,
        device=resolve_device(args.device),
        seed=args.seed,
        out=Path(args.out) if args.out else None,
    )
    print(
        json.dumps(
            {"model": str(args.model), "sampler": samples.sampler, "samples": samples.count, "out": str(path)}
        )
    )
    return 0


def cmd_fit_variance(args: argparse.Namespace) -> int:
    from recon.pipeline import fit_variance_model

    path, nll = fit_variance_model(
        args.model, steps=args.steps, batch=args.batch, device=resolve_device(args.device), seed=args.seed
    )
    print(json.dumps({"model": str(args.model), "out": str(path), "nll": nll}))
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from recon.pipeline import calibrate_model

    calibration = calibrate_model(
        args.model,
        args.uncertainty,
        coverage=args.coverage,
        samples=args.samples,
        data=Path(args.data) if args.data else None,
        device=resolve_device(args.device),
        bins=args.bins,
    )
    print(
        json.dumps(
            {
                "model": str(args.model),
                "sampler": args.uncertainty,
                "coverage": args.coverage,
                **calibration.to_json(),
            }
        )
    )
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from recon.trainer import Trainer, load_config

    if args.recipe is None and args.config is None:
        raise InputError("give --recipe NAME or --config FILE.toml")
    overrides = _key_values(args.set)
    if args.steps is not None:
        overrides["steps"] = str(args.steps)
    config = load_config(args.recipe, args.config, {k: v for k, v in overrides.items()})
    if args.term:
        config = dataclasses.replace(config, terms=[*config.terms, *args.term])
    trainer = Trainer(config, args.out, device=resolve_device(args.device))
    result = trainer.run(resume=args.resume)
    print(json.dumps({"out": str(args.out), "recipe": config.recipe, **result}))
    return 0


def _codec(name: str | None, device: Any) -> Any:
    from recon.codec import load_codec
    from recon.codec.model import default_codec

    model = load_codec(name) if name else default_codec()
    model.net.to(device)
    return model


Written = Callable[[Path], Sequence[Path]]  # every file one output name stands for


def _paths(
    source: Path, out: Path, suffixes: Any, suffix: str, written: Written = lambda out: [out]
) -> list[tuple[Path, Path]]:
    """(input, output) pairs: one file to ``out``, or each file of a folder with one of ``suffixes``
    (``None``: what the dataset readers read) to ``out/<stem><suffix>``. ``written(output)``: every
    file an output name stands for; none may be an input or written by two inputs."""
    from recon.datasets.readers import input_files
    from recon.files import check_writable

    folder = source.is_dir()
    if folder and out.exists() and not out.is_dir():
        raise InputError("with a folder of inputs, --out must be a folder", out)
    pairs = [(source, out)]
    if folder:
        pairs = [(p, out / (p.stem + suffix)) for p in input_files(source, suffixes)]
    _check_collisions(pairs, written)
    if folder:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"cannot create the output folder ({exc.strerror})", out) from None
    for parent in {o.parent for _, o in pairs}:
        check_writable(parent)
    return pairs


def _check_collisions(pairs: list[tuple[Path, Path]], written: Written) -> None:
    """Refuse, before any work, outputs that would replace an input (by any spelling of its path,
    links included) or that two inputs would both write (``x.png`` and ``x.npy`` → ``x.rcz``)."""
    inputs = {os.path.realpath(p) for p, _ in pairs}
    identities = {(s.st_dev, s.st_ino) for s in (os.stat(p) for p, _ in pairs if p.exists())}
    writers: dict[str, Path] = {}
    for source, out in pairs:
        for path in written(out):
            key = os.path.realpath(path)
            if key in inputs or (path.exists() and (path.stat().st_dev, path.stat().st_ino) in identities):
                raise InputError("the output would overwrite an input; choose another --out", path)
            if key in writers:
                raise InputError(f"{writers[key].name} and {source.name} would both be written to", path)
            writers[key] = source


def _each(pairs: list[tuple[Path, Path]], work: Any, desc: str, folder: bool) -> int:
    """Run ``work(input, output)`` on every pair, one JSON line each. A single input's error ends
    the command; in a folder it is reported and the others go on (exit 2 if any failed)."""
    from tqdm import tqdm

    failures = 0
    for source, out in tqdm(pairs, desc=desc, leave=False, disable=not folder, dynamic_ncols=True):
        try:
            print(json.dumps(work(source, out)), flush=True)
        except InputError as exc:
            if not folder:
                raise
            failures += 1
            tqdm.write(f"recon: error: {exc}", file=sys.stderr)
    return 2 if failures else 0


def cmd_compress(args: argparse.Namespace) -> int:
    from recon.codec import Quality
    from recon.codec.files import SUFFIXES, compress_file

    lossy = (args.psnr, args.bpp, args.delta)
    quality = Quality(
        lossless=args.lossless or (all(v is None for v in lossy) and not args.latent_only),
        psnr=args.psnr,
        bpp=args.bpp,
        delta=args.delta,
        latent_only=args.latent_only,
    )
    model = _codec(args.model, resolve_device(args.device))
    source = Path(args.input)
    pairs = _paths(source, Path(args.out), SUFFIXES, ".rcz")
    work = lambda path, out: compress_file(path, out, model, quality, args.dataset, args.fast)  # noqa: E731
    return _each(pairs, work, "compress", source.is_dir())


def cmd_decompress(args: argparse.Namespace) -> int:
    from recon.codec.files import decompress_file

    model = _codec(args.model, resolve_device(args.device))
    source = Path(args.input)
    folder = source.is_dir()  # a folder's outputs keep the file type each input came from
    pairs = _paths(source, Path(args.out), (".rcz",), "")
    return _each(
        pairs, lambda path, out: decompress_file(path, out, model, keep_kind=folder), "decompress", folder
    )


def cmd_train_codec(args: argparse.Namespace) -> int:
    import torch

    from recon.codec import save_codec
    from recon.codec.training import train_codec
    from recon.files import atomic_output, output_folder
    from recon.nets.search_spaces import MAX_WIDTH
    from recon.train import MAX_STEPS

    sizes = (args.latent, args.width)
    if not (1 <= args.steps <= MAX_STEPS and all(1 <= n <= MAX_WIDTH for n in sizes) and args.threads >= 1):
        raise InputError(
            f"--steps must be in [1, {MAX_STEPS}], --latent and --width in [1, {MAX_WIDTH}], --threads >= 1"
        )
    if not (math.isfinite(args.lam) and args.lam >= 0):
        raise InputError(f"--lam must be a non-negative number, got {args.lam}")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    with output_folder(out.parent):
        model, history = train_codec(
            steps=args.steps, latent=args.latent, width=args.width, lam=args.lam, seed=args.seed
        )
        save_codec(model, out)
        with atomic_output(out.parent / f"{out.name}.history.json") as tmp:
            tmp.write_text(json.dumps(history) + "\n")
    print(json.dumps({"out": str(out), **model.meta, "identity": model.identity.hex()}))
    return 0


def _version() -> str:
    from recon import __version__

    return __version__


def cmd_search(args: argparse.Namespace) -> int:
    from recon.search import SearchConfig, run_search

    def integers(text: str) -> tuple[int, ...]:
        try:
            return tuple(int(t) for t in text.split(","))
        except ValueError:
            raise InputError(f"expected comma-separated integers, got {text!r}") from None

    task_params = _key_values(args.param)
    config = SearchConfig(
        task=args.task,
        task_params=task_params,
        widths=integers(args.widths),
        blocks=args.blocks,
        unshuffle=args.unshuffle,
        latent=args.latent,
        lam=args.lam,
        gate_lam=args.gate_lam,
        optimizer=args.optimizer,
        lr=args.lr,
        init_density=args.init_density,
        steps=args.steps,
        batch=args.batch,
        patch=args.patch,
        seed=args.seed,
        log_every=max(1, args.steps // 40),
        sources=tuple(s for s in args.sources.split(",") if s),
    )
    result = run_search(config, args.out, device=resolve_device(args.device))
    print(
        json.dumps(
            {
                "out": str(args.out),
                "task": args.task,
                "density": result["density"],
                "active_channels": result["active_channels"],
                "total_channels": result["total_channels"],
                "open_gates": result["open_gates"],
                "flops_compact": result["flops_compact"],
                "flops_supernet": result["flops_supernet"],
                "test": result["test"],
            }
        )
    )
    return 0


def cmd_datasets_build(args: argparse.Namespace) -> int:
    from recon.datasets.builders import build_dataset

    options = {
        k: int(v)
        for k, v in (("volumes", args.volumes), ("slices", args.slices), ("size", args.size))
        if v is not None
    }
    if options and args.name != "phantoms":
        raise InputError(f"--volumes/--slices/--size apply to 'phantoms' only, not {args.name!r}")
    manifest = build_dataset(args.name, args.out, seed=args.seed, **options)
    print(
        json.dumps(
            {
                "dataset": args.name,
                "out": str(args.out),
                "volumes": len(manifest["volumes"]),
                "slices": sum(v.get("slices", 1) for v in manifest["volumes"]),
            }
        )
    )
    return 0


def cmd_datasets_list(args: argparse.Namespace) -> int:
    from recon.datasets.builders import BUILDERS

    entries = [
        {"name": name, "description": (fn.__doc__ or "").strip().splitlines()[0]}
        for name, fn in BUILDERS.items()
    ]
    _print_entries(entries, args.json, ("name", "description"))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="recon", description="Imaging inverse problems with sparse learned networks.")
    parser.add_argument("--version", action="version", version=f"recon {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("plugins", help="list loaded plugins")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_plugins)

    p = sub.add_parser("operators", help="list registered forward operators")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_list, kind="operators")

    p = sub.add_parser("list", help="list a registry: operators, noise_models, networks, dataset_readers")
    p.add_argument("kind")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_list)

    p = sub.add_parser("reconstruct", help="reconstruct a scan (k-space h5, DICOM, NIfTI, PNG/TIFF, NPY)")
    p.add_argument("input")
    p.add_argument("--out", required=True, help="output .h5 (a .png and .metrics.json are written beside it)")
    p.add_argument("--operator", default="mri", help="forward operator for image inputs (default: mri)")
    p.add_argument("--acceleration", type=float)
    p.add_argument("--center-fraction", dest="center_fraction", type=float)
    p.add_argument("--mask", choices=("random", "equispaced", "gaussian"))
    p.add_argument("--seed", type=_seed, default=None, help="seed of the mask and the noise (default 0)")
    p.add_argument("-p", "--param", action="append", metavar="KEY=VALUE", help="operator parameter")
    p.add_argument("--noise", help="noise model spec, e.g. gaussian:sigma=0.01")
    p.add_argument(
        "--method",
        choices=("learned", "zero-filled", "tv", "tikhonov"),
        help="default: learned with the bundled model for the operator (TV when there is none)",
    )
    p.add_argument(
        "--model", help="a bundled model name (mri-4x, mri-8x, deblur-gauss, denoise-gauss) or a path"
    )
    p.add_argument("--tv-lambda", dest="tv_lambda", type=float)
    p.add_argument("--tikhonov-lambda", dest="tikhonov_lambda", type=float)
    p.add_argument(
        "--uncertainty",
        help="sampler whose stored weight samples give the maps (psgld, baoab, mc-dropout, ensemble)",
    )
    p.add_argument("--samples", type=int, default=16, help="weight samples to use (default 16)")
    p.add_argument("--coverage", type=float, default=0.9, help="credible interval coverage (default 0.9)")
    p.add_argument("--iterations", type=int, default=100)
    p.add_argument("--reader", help="force a dataset reader (see: recon list dataset_readers)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1 …")
    p.set_defaults(run=cmd_reconstruct)

    p = sub.add_parser("train", help="train a reconstructor from a recipe or a TOML config")
    p.add_argument("--recipe", help="mri-4x, mri-8x, deblur-gauss, denoise-gauss")
    p.add_argument("--config", help="TOML file with TrainConfig keys (applied after the recipe)")
    p.add_argument("--out", required=True, help="run folder (checkpoints, model.json/.safetensors, history)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key")
    p.add_argument(
        "--term",
        action="append",
        metavar="NAME:KEY=VALUE,...",
        help="add a training term (see: recon list training_terms), e.g. distill:teacher=runs/dense/model",
    )
    p.add_argument("--steps", type=int)
    p.add_argument("--resume", action="store_true", help="continue from the run folder's latest checkpoint")
    p.add_argument("--device", default="auto")
    p.set_defaults(run=cmd_train)

    p = sub.add_parser("sample", help="draw weight samples of a model for uncertainty maps")
    p.add_argument("--model", required=True, help="bundled model name or path")
    p.add_argument(
        "--sampler",
        default="psgld",
        help="psgld, baoab, mc-dropout, ensemble, with options as name:key=value,... (e.g. "
        "mc-dropout:iterations=1 samples only an unrolled model's last pass; layers=N its last N layers)",
    )
    p.add_argument("--samples", type=int, default=16)
    p.add_argument("--out", help="output stem (default: beside the model, MODEL.SAMPLER.samples)")
    p.add_argument("--seed", type=_seed, default=0)
    p.add_argument("--device", default="auto")
    p.set_defaults(run=cmd_sample)

    p = sub.add_parser(
        "fit-variance", help="fit a variance head (aleatoric uncertainty) beside a trained model"
    )
    p.add_argument("--model", required=True)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seed", type=_seed, default=0)
    p.add_argument("--device", default="auto")
    p.set_defaults(run=cmd_fit_variance)

    p = sub.add_parser("calibrate", help="fit the credible-interval factors on validation volumes")
    p.add_argument("--model", required=True)
    p.add_argument("--uncertainty", default="psgld", help="the sampler whose samples to calibrate")
    p.add_argument("--data", help="folder of validation .h5 volumes (default: packaged-mr val split)")
    p.add_argument("--coverage", type=float, default=0.9)
    p.add_argument("--samples", type=int, default=16)
    p.add_argument(
        "--bins", type=int, default=4, help="spread groups, each with its own factor (1: one factor)"
    )
    p.add_argument("--device", default="auto")
    p.set_defaults(run=cmd_calibrate)

    p = sub.add_parser("search", help="find a sparse architecture by group-sparse Bregman training")
    p.add_argument("--task", default="denoise", choices=("denoise", "deblur", "mri", "autoencoder"))
    p.add_argument("--out", required=True, help="output folder (architecture.json, growth.png, model.*)")
    p.add_argument("--optimizer", default="adabreg", choices=("adabreg", "linbreg"))
    p.add_argument("--lam", type=float, default=0.05, help="group-sparsity strength λ")
    p.add_argument("--gate-lam", dest="gate_lam", type=float, help="ℓ1 strength on gates (default: λ)")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--patch", type=int, default=64)
    p.add_argument("--widths", default="16,32,64", help="channels per U-Net level")
    p.add_argument("--blocks", type=int, default=1, help="residual blocks per level")
    p.add_argument(
        "--unshuffle",
        type=int,
        default=1,
        help="U-Net on f×f pixel blocks as channels: f² times fewer pixels per level, faster when compacted",
    )
    p.add_argument("--latent", type=int, default=64, help="latent channels of the autoencoder super-network")
    p.add_argument("--init-density", dest="init_density", type=float, default=0.01)
    p.add_argument("--sources", default="mr,natural,phantom", help="training images: mr, natural, phantom")
    p.add_argument(
        "-p", "--param", action="append", metavar="KEY=VALUE", help="task parameter, e.g. sigma=0.05"
    )
    p.add_argument("--seed", type=_seed, default=0)
    p.add_argument("--device", default="auto")
    p.set_defaults(run=cmd_search)

    p = sub.add_parser("compress", help="compress images with the learned codec (.rcz)")
    p.add_argument("input", help="NPY, PNG, TIFF, DICOM or fastMRI-layout h5 file, or a folder of them")
    p.add_argument("--out", required=True, help="output .rcz file (a folder for a folder of inputs)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--lossless", action="store_true", help="bit-exact (the default)")
    mode.add_argument(
        "--psnr", type=float, help="lossy: at least this PSNR (dB) per slice (per RGB image for colour)"
    )
    mode.add_argument(
        "--bpp",
        type=float,
        help="lossy: at most this many bits per pixel per slice (colour: per sample; 1 is 3 per RGB pixel)",
    )
    mode.add_argument("--delta", type=int, help="near-lossless: maximum absolute error per pixel")
    mode.add_argument(
        "--latent-only", dest="latent_only", action="store_true", help="lossy: the autoencoder alone"
    )
    p.add_argument("--model", help="codec model (default: the bundled one)")
    p.add_argument("--dataset", help="h5 dataset to compress (default: reconstruction_rss/_esc)")
    p.add_argument("--fast", action="store_true", help="skip the autoencoder path (faster encoding)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(run=cmd_compress)

    p = sub.add_parser("decompress", help="decode .rcz files")
    p.add_argument("input", help=".rcz file or a folder of them")
    p.add_argument("--out", required=True, help="output file (.npy/.png/.tif/.dcm/.h5) or folder")
    p.add_argument("--model", help="codec model (default: the bundled one)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(run=cmd_decompress)

    p = sub.add_parser("train-codec", help="train a codec (group-sparse latent channels) and save it")
    p.add_argument("--out", required=True, help="output stem: writes OUT.json and OUT.safetensors")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--latent", type=int, default=64, help="latent channels of the super-network")
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--lam", type=float, default=0.1, help="group-sparsity strength on latent channels")
    p.add_argument("--seed", type=_seed, default=0)
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads (default 1: float sums depend on the thread count, so one thread makes the "
        "result the same bit for bit on every run)",
    )
    p.set_defaults(run=cmd_train_codec)

    datasets = sub.add_parser("datasets", help="build datasets from packaged data").add_subparsers(
        dest="datasets_command", required=True, parser_class=_Parser
    )
    p = datasets.add_parser("build", help="build a fastMRI-layout dataset")
    p.add_argument("name")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=_seed, default=0)
    p.add_argument("--volumes", type=int)
    p.add_argument("--slices", type=int)
    p.add_argument("--size", type=int)
    p.set_defaults(run=cmd_datasets_build)
    p = datasets.add_parser("list", help="list dataset builders")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_datasets_list)
    return parser


def _show_warning(message: Any, category: type, *_: Any, **__: Any) -> None:
    print(f"recon: warning: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    retain_freed_memory()  # fewer page faults between network passes (recon.allocator)
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        return _run(argv)


def _run(argv: Sequence[str] | None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return int(args.run(args) or 0)
    except (InputError, PluginError) as exc:
        print(f"recon: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("recon: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # a path the command was given: missing, unreadable, unwritable, disk full
        print(f"recon: error: {exc.filename or 'file'}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        if os.environ.get("RECON_DEBUG"):
            raise
        if isinstance(exc, MemoryError) or ("allocate" in str(exc) and "memory" in str(exc)):
            print("recon: error: out of memory: the input or a size parameter is too large", file=sys.stderr)
            return 2
        print(
            f"recon: internal error: {type(exc).__name__}: {exc} (RECON_DEBUG=1 shows the traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
