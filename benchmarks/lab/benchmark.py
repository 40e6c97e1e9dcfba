"""Inference and training speed of RepVGG next to mmpretrain's RepVGG and ResNets.

Every comparison runs in one process, with the same weights, timed round-robin (see
:mod:`mmrepvgg.analysis._timing`); ratios are to mmpretrain 1.2.0's deploy RepVGG (its class
built directly, the same train-form weights loaded, its ``switch_to_deploy()``).
"""
import copy
import importlib.metadata
import os
import platform
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import mmpretrain
import numpy as np
import torch
import torchvision
from mmpretrain.models.backbones import RepVGG as MMPretrainRepVGG
from torch import nn

from mmrepvgg.analysis.complexity import count_complexity
from mmrepvgg.analysis._timing import time_interleaved
from mmrepvgg.apis.convert import repvgg_convert
from mmrepvgg.apis.inference import _InferenceModel as InferenceModel, prepare_for_inference
from mmrepvgg.checkpoint.fitting import repvgg_prefix
from mmrepvgg.deploy._host_cpu import INT8_WEIGHT_MAX, int8_kernel_choice, int8_weight_choice
from mmrepvgg.deploy.onnx_export import export_onnx
from mmrepvgg.deploy.onnx_runtime import OnnxRuntimeModel, onnxruntime
from mmrepvgg.deploy._qdq import quantize_int8
from mmrepvgg.deploy.torch_int8 import TorchInt8Error, quantize_pt2e_model
from mmrepvgg.model_zoo import _zoo_models
from mmrepvgg.models import (ARCH_SETTINGS, RepVGG, build_model, reparameterize_blocks,
                             repvgg_classifier_cfg)
from mmrepvgg.models.arch import resolve_arch
from mmrepvgg.models.repvgg import image_channels
from mmrepvgg._numerics import max_relative_error
from lab.synthetic import randomize_batch_norms_
from mmrepvgg._utils import MissingExtraError

from .emulated_cpu import seen_cpu
from .roof import conv3x3_roof
from .rows import (COMPILED, DEPLOY, INT8_ONNXRUNTIME, INT8_OPENVINO, INT8_PYTORCH,
                   MMPRETRAIN_DEPLOY, ONNXRUNTIME, OPENVINO, RECOMMENDED, RESNET18, RESNET50,
                   TRAIN)
from .threads import torch_threads


# The files :func:`onnxruntime_runners` writes in its ``workdir``.
FP32_ONNX_FILE = 'deploy.onnx'
INT8_ONNX_FILE = 'deploy_int8.onnx'


@dataclass
class BenchmarkSettings:
    """What to measure. Sizes are ``(H, W)``; batch sizes count images per call."""
    batch_sizes: Sequence[int] = (1, 16)
    input_size: Tuple[int, int] = (224, 224)
    warmup: int = 1
    rounds: int = 5
    device: str = 'cpu'
    threads: Optional[int] = None  # torch and ONNX Runtime intra-op threads; None: torch's
    compile: bool = True
    roof_conv: Tuple[int, int, int] = (8, 256, 56)  # (batch, channels, size)
    conversion_arch: str = 'B3'
    conversion_rounds: int = 3
    scaling_batch_sizes: Sequence[int] = (1, 2, 4, 8, 16, 32)
    scaling_input_sizes: Sequence[int] = (128, 160, 192, 224, 256, 320)
    scaling_batch_size: int = 8
    variants: Sequence[str] = ()
    variant_batch_size: int = 4
    variant_rounds: int = 3
    variant_onnx: bool = True
    train: bool = False
    train_batch_size: int = 32
    train_rounds: int = 3

    @classmethod
    def quick(cls, **overrides) -> 'BenchmarkSettings':
        """Tiny inputs and one round: checks that every row is produced, in seconds."""
        settings = dict(batch_sizes=(2, ), input_size=(32, 32), warmup=1, rounds=1,
                        roof_conv=(1, 32, 16), conversion_rounds=1,
                        scaling_batch_sizes=(1, 2), scaling_input_sizes=(32, 64),
                        scaling_batch_size=1, variant_batch_size=1, variant_rounds=1,
                        train_batch_size=2,
                        train_rounds=1)
        settings.update(overrides)
        return cls(**settings)


def machine_description() -> dict:
    """The conditions of a run: CPU (model, ISA, the INT8 weights and kernels it gets),
    threads, library versions, load average."""
    seen = seen_cpu()  # one read of /proc/cpuinfo
    cpu = seen.cpu
    weight_bits = int8_weight_choice(cpu).bits
    return dict(cpu=cpu.model_name, cpu_isa=list(cpu.isa), cpu_vnni=cpu.has_vnni,
                cpu_hidden_isa=list(seen.hidden_isa), onednn_isa_cap=cpu.onednn_isa_cap,
                int8_weight_bits=weight_bits,
                int8_kernels=int8_kernel_choice(
                    cpu, weight_max=INT8_WEIGHT_MAX[weight_bits]).kernels,
                logical_cpus=cpu.logical_cpus, torch_threads=torch.get_num_threads(),
                torch=torch.__version__, torchvision=torchvision.__version__,
                mmpretrain=mmpretrain.__version__, onnxruntime=onnxruntime.__version__,
                python=platform.python_version(), load_average_1min=os.getloadavg()[0])


def random_train_classifier(arch: str, seed: int = 0, **backbone_kwargs) -> nn.Module:
    """A published classifier of ``arch`` with random weights and trained-looking BNs."""
    torch.manual_seed(seed)
    return randomize_batch_norms_(build_model(repvgg_classifier_cfg(arch, **backbone_kwargs)),
                                  seed)


def repvgg_backbone(model: nn.Module) -> RepVGG:
    """The (one) RepVGG backbone inside ``model``."""
    prefix = repvgg_prefix(model)
    if prefix is None:
        raise ValueError('expected one mmrepvgg RepVGG in the model')
    return model.get_submodule(prefix.rstrip('.'))


def arch_name(model: nn.Module) -> str:
    """The published variant name of the model's RepVGG backbone, or ``'custom'``."""
    arch = repvgg_backbone(model).arch
    return next((name for name in ARCH_SETTINGS if resolve_arch(name) == arch), 'custom')


def mmpretrain_copy(model: nn.Module, deploy: bool = True, **backbone_kwargs) -> nn.Module:
    """A copy of ``model`` whose RepVGG backbone is mmpretrain's ``RepVGG`` class holding
    the same weights, optionally switched to deploy with mmpretrain's own
    ``switch_to_deploy()``; in eval mode."""
    ours = repvgg_backbone(model)
    theirs = MMPretrainRepVGG(copy.deepcopy(ours.arch), out_indices=ours.out_indices,
                              **backbone_kwargs)
    theirs.load_state_dict(ours.state_dict())
    if deploy:
        theirs.switch_to_deploy()
    # The memo makes deepcopy put mmpretrain's backbone where ours was.
    result = copy.deepcopy(model, memo={id(ours): theirs})
    result.eval()  # not chained: mmpretrain's train() returns None
    return result


def _batch_runner(model: Callable, images: torch.Tensor) -> Callable[[], object]:
    """A call running ``model`` on ``images``; plain modules under ``torch.no_grad``, as
    mmpretrain's test loop runs them (InferenceModel brings its own inference mode)."""
    if not isinstance(model, nn.Module) or isinstance(model, InferenceModel):
        return lambda: model(images)

    def run_batch():
        with torch.no_grad():
            return model(images)
    return run_batch


def _random_calibration(input_shape: Sequence[int]) -> List[np.ndarray]:
    """Two random batches of ``input_shape`` ``(N, C, H, W)`` float32: enough to calibrate
    an INT8 model for timing, which does not depend on the values (for accuracy,
    ``tools/deployment/pytorch2onnx.py --quantize int8`` calibrates on real images)."""
    generator = np.random.default_rng(0)
    return [generator.standard_normal(input_shape).astype(np.float32) for _ in range(2)]


def onnxruntime_runners(deploy_model: nn.Module, workdir: str, input_shape: Sequence[int],
                        num_threads: Optional[int], weight_bits: Optional[int] = None
                        ) -> Tuple[Dict[str, OnnxRuntimeModel], float]:
    """FP32 and static INT8 ONNX Runtime models of ``deploy_model`` (images tensor in,
    logits tensor out) as ``{row name: model}``, and the FP32 file's max relative error.

    The INT8 file is calibrated on :func:`_random_calibration` batches. Its weights have
    ``weight_bits`` bits, by default what the tools write on the CPU this process sees
    (:func:`mmrepvgg.deploy._host_cpu.int8_weight_choice`: 7 on x86 without VNNI, the
    AVX2-only emulation included), and it runs the kernels chosen for them there.
    """
    fp32_path = os.path.join(workdir, FP32_ONNX_FILE)
    int8_path = os.path.join(workdir, INT8_ONNX_FILE)
    report = export_onnx(deploy_model, fp32_path, input_shape, dynamic_batch=True)
    cpu = seen_cpu(num_threads).cpu
    if weight_bits is None:
        weight_bits = int8_weight_choice(cpu).bits
    quantize_int8(fp32_path, int8_path, _random_calibration(input_shape),
                  weight_bits=weight_bits)
    # The emulated CPU's kernels: the adapter's 'auto' would read /proc/cpuinfo.
    kernels = int8_kernel_choice(cpu, weight_max=INT8_WEIGHT_MAX[weight_bits]).kernels
    return {name: OnnxRuntimeModel(path, num_threads, kernels)
            for name, path in ((ONNXRUNTIME, fp32_path), (INT8_ONNXRUNTIME, int8_path))
            }, report.max_relative_error


def openvino_runners_if_installed(fp32_onnx_path: str, input_shape: Sequence[int],
                                  num_threads: Optional[int], info: dict) -> Dict[str, nn.Module]:
    """OpenVINO FP32 and INT8 (NNCF, calibrated on :func:`_random_calibration` batches)
    models of the FP32 ONNX file the ONNX Runtime rows run (same graph, same weights);
    sets ``info['openvino']`` to its version, or, without the ``[openvino]`` extra,
    returns none and sets ``info['openvino_missing']`` to why."""
    try:
        from mmrepvgg.deploy.openvino_runtime import _quantize_ir as quantize_ir
        from mmrepvgg.deploy.openvino_runtime import OpenVINOModel, openvino
    except MissingExtraError as missing:
        info['openvino_missing'] = str(missing)
        return {}
    info['openvino'] = openvino.__version__
    int8_ir = quantize_ir(fp32_onnx_path, _random_calibration(input_shape))
    return {OPENVINO: OpenVINOModel(fp32_onnx_path, num_threads),
            INT8_OPENVINO: OpenVINOModel(int8_ir, num_threads)}


def torch_int8_runner_if_installed(deploy_model: nn.Module, input_shape: Sequence[int],
                                   info: dict) -> Dict[str, nn.Module]:
    """The PyTorch INT8 model of ``deploy_model`` (PT2E, calibrated on
    :func:`_random_calibration` batches), run at torch's threads; sets ``info['torchao']``
    to its version, or, without torchao (the ``[torch-int8]`` extra) or a torch that can
    export, returns none and sets ``info['torch_int8_missing']`` to why."""
    try:
        model = quantize_pt2e_model(deploy_model, _random_calibration(input_shape))
    except (MissingExtraError, TorchInt8Error) as missing:
        info['torch_int8_missing'] = str(missing)
        return {}
    info['torchao'] = importlib.metadata.version('torchao')
    return {INT8_PYTORCH: model}


def inference_candidates(train_model: nn.Module, batch_sizes: Sequence[int],
                         input_size: Tuple[int, int], device: str, compile_model: bool,
                         workdir: str) -> Tuple[Dict[str, Callable], dict]:
    """The models to compare, as ``{row name: f(images) -> outputs}``, and what building
    them cost (seconds of repvgg_convert including its deep copy, ONNX check error)."""
    train_model = train_model.to(device).eval()
    height, width = input_size
    in_channels = image_channels(train_model)
    start = time.perf_counter()
    deploy_model = repvgg_convert(train_model)
    info = dict(convert_with_deepcopy_s=time.perf_counter() - start)
    models: Dict[str, Callable] = {
        TRAIN: train_model, DEPLOY: deploy_model,
        RECOMMENDED: prepare_for_inference(deploy_model)}
    if compile_model:
        models[COMPILED] = prepare_for_inference(deploy_model, backend='compile')
    if device == 'cpu':  # ONNX Runtime runs here on the CPU execution provider only
        runners, info['onnx_max_relative_error'] = onnxruntime_runners(
            deploy_model, workdir, (min(batch_sizes), in_channels, height, width),
            torch.get_num_threads())
        models.update(runners)
        models.update(openvino_runners_if_installed(
            os.path.join(workdir, FP32_ONNX_FILE),
            (min(batch_sizes), in_channels, height, width), torch.get_num_threads(), info))
        if compile_model:  # PT2E INT8 runs through torch.compile
            models.update(torch_int8_runner_if_installed(
                deploy_model, (min(batch_sizes), in_channels, height, width), info))
    models[MMPRETRAIN_DEPLOY] = mmpretrain_copy(train_model).to(device)
    models[RESNET18] = torchvision.models.resnet18().to(device).eval()
    models[RESNET50] = torchvision.models.resnet50().to(device).eval()
    return models, info


def timing_row(timing) -> dict:
    """A :func:`time_interleaved` timing as a row; ``spread`` is ``(max - min) / median``,
    how much the machine's load moved the timings."""
    return dict(batch_size=timing.batch_size, images_per_s=timing.images_per_s,
                latency_ms_median=1e3 * timing.median_s, latency_ms_min=1e3 * timing.min_s,
                latency_ms_max=1e3 * timing.max_s,
                spread=(timing.max_s - timing.min_s) / timing.median_s, rounds=timing.rounds)


def measure_inference(models: Dict[str, Callable], batch_size: int,
                      input_size: Tuple[int, int], settings: BenchmarkSettings,
                      in_channels: int = 3) -> Dict[str, dict]:
    """Time each model on one random batch; rows with images/s and latency."""
    images = torch.randn(batch_size, in_channels, *input_size, device=settings.device)
    runners = {name: _batch_runner(model, images) for name, model in models.items()}
    timings = time_interleaved(runners, batch_size, settings.warmup, settings.rounds,
                               settings.device)
    return {name: timing_row(timing) for name, timing in timings.items()}


def add_ratios(rows: Dict[str, dict], baseline: str = MMPRETRAIN_DEPLOY) -> None:
    """Set each row's ``ratio_to_mmpretrain_deploy``: its images/s over the
    ``baseline`` row's, measured in the same round-robin."""
    for row in rows.values():
        row['ratio_to_mmpretrain_deploy'] = (row['images_per_s'] /
                                             rows[baseline]['images_per_s'])


def time_conversion(arch: str, rounds: int) -> dict:
    """Seconds to fuse a train-form ``arch`` backbone: ours (``reparameterize_blocks``)
    against mmpretrain's ``switch_to_deploy()``, same weights, median of ``rounds``
    (each on a fresh copy made beforehand, alternating)."""
    torch.manual_seed(0)
    ours = randomize_batch_norms_(RepVGG(arch).eval())
    seconds: Dict[str, List[float]] = dict(ours=[], mmpretrain=[])
    for _ in range(rounds):
        our_copy = copy.deepcopy(ours)
        start = time.perf_counter()
        reparameterize_blocks(our_copy)
        seconds['ours'].append(time.perf_counter() - start)
        del our_copy
        their_copy = MMPretrainRepVGG(copy.deepcopy(ours.arch))
        their_copy.load_state_dict(ours.state_dict())
        start = time.perf_counter()
        their_copy.switch_to_deploy()
        seconds['mmpretrain'].append(time.perf_counter() - start)
        del their_copy
    ours_s, mmpretrain_s = (sorted(seconds[name])[rounds // 2] for name in seconds)
    return dict(arch=arch, ours_s=ours_s, mmpretrain_s=mmpretrain_s,
                speedup=mmpretrain_s / ours_s, rounds=rounds)


def measure_scaling(models: Dict[str, Callable], settings: BenchmarkSettings,
                    in_channels: int) -> Dict[str, List[dict]]:
    """Images/s of the eager rows vs batch size (at ``input_size``) and vs input size
    (at ``scaling_batch_size``); compiled graphs are left out (one compile per shape)."""
    scaled = {name: models[name] for name in (DEPLOY, RECOMMENDED, MMPRETRAIN_DEPLOY)}
    by_batch, by_size = [], []
    for batch_size in settings.scaling_batch_sizes:
        rows = measure_inference(scaled, batch_size, settings.input_size, settings,
                                 in_channels)
        by_batch += [dict(path=name, input_size=list(settings.input_size), **row)
                     for name, row in rows.items()]
    for size in settings.scaling_input_sizes:
        rows = measure_inference(scaled, settings.scaling_batch_size, (size, size), settings,
                                 in_channels)
        by_size += [dict(path=name, input_size=[size, size], **row)
                    for name, row in rows.items()]
    return dict(batch_size=by_batch, input_size=by_size)


def measure_variants(archs: Sequence[str], settings: BenchmarkSettings) -> List[dict]:
    """Per published variant (random weights, trained-looking BNs): train, deploy eager,
    recommended (channels-last), mmpretrain deploy and (with ``variant_onnx``, on the
    CPU) ONNX Runtime FP32 and INT8 images/s at ``variant_batch_size``; how far our and
    mmpretrain's deploy outputs are from the train model's on a ``(2, 3, 64, 64)``
    batch, and ONNX Runtime FP32's from PyTorch's at ``input_size``."""
    rows = []
    for arch in archs:
        train_model = random_train_classifier(arch).to(settings.device)
        deploy_model = repvgg_convert(train_model)
        models = {TRAIN: train_model, DEPLOY: deploy_model,
                  RECOMMENDED: prepare_for_inference(deploy_model),
                  MMPRETRAIN_DEPLOY: mmpretrain_copy(train_model).to(settings.device)}
        images = torch.randn(2, 3, 64, 64, device=settings.device)
        with torch.no_grad():
            reference = train_model(images)
            errors = {DEPLOY: max_relative_error(reference, deploy_model(images)),
                      MMPRETRAIN_DEPLOY: max_relative_error(
                          reference, models[MMPRETRAIN_DEPLOY](images))}
        if settings.variant_onnx and settings.device == 'cpu':
            with tempfile.TemporaryDirectory() as workdir:
                runners, errors[ONNXRUNTIME] = onnxruntime_runners(
                    deploy_model, workdir, (2, 3, *settings.input_size), settings.threads)
            models.update(runners)
        timings = measure_inference(models, settings.variant_batch_size,
                                    settings.input_size,
                                    replace(settings, rounds=settings.variant_rounds))
        add_ratios(timings)
        top1 = next((model.top1 for model in _zoo_models().values()
                     if model.arch == arch and not model.deploy), None)
        for name, timing in timings.items():
            rows.append(dict(arch=arch, path=name, top1=top1,
                             max_relative_error_vs_train=errors.get(name),
                             onnx_max_relative_error=errors.get(ONNXRUNTIME), **timing))
        del models, train_model, deploy_model
    return rows


def run_inference_benchmark(train_model: nn.Module, settings: BenchmarkSettings) -> dict:
    """Everything but training: the comparison table at each batch size, the 3x3-conv roof
    and the fraction of it the deploy model reaches, conversion times, scaling and the
    variant sweep. Returns a JSON-ready dict (see docs/benchmarks.md)."""
    with torch_threads(settings.threads):  # given back afterwards
        results = dict(machine=machine_description(), settings=asdict(settings))
        in_channels = image_channels(train_model)
        results['conversion'] = [time_conversion(settings.conversion_arch,
                                                 settings.conversion_rounds)]
        results['variants'] = measure_variants(settings.variants, settings)
        with tempfile.TemporaryDirectory() as workdir:
            models, info = inference_candidates(train_model, settings.batch_sizes,
                                                settings.input_size, settings.device,
                                                settings.compile, workdir)
            results.update(info)
            batch, channels, size = settings.roof_conv
            results['roof'] = conv3x3_roof(batch, channels, size, settings.warmup,
                                           settings.rounds, settings.device)
            deploy_gmacs = count_complexity(models[DEPLOY], settings.input_size
                                            ).macs_mmengine / 1e9
            results['deploy_gmacs_per_image'] = deploy_gmacs
            results['inference'] = []
            for batch_size in settings.batch_sizes:
                rows = measure_inference(models, batch_size, settings.input_size, settings,
                                         in_channels)
                add_ratios(rows)
                for name, row in rows.items():
                    if name in (DEPLOY, RECOMMENDED, COMPILED, ONNXRUNTIME, OPENVINO,
                                MMPRETRAIN_DEPLOY):
                        row['fraction_of_conv_roof'] = (row['images_per_s'] * deploy_gmacs /
                                                        results['roof']['gmacs_per_s'])
                    results['inference'].append(dict(path=name, **row))
            results['scaling'] = measure_scaling(models, settings, in_channels)
            del models
        results['load_average_1min_end'] = os.getloadavg()[0]
        return results


@dataclass
class TrainingProbe:
    """One training-speed measurement, run in a fresh process (see :func:`measure_training`)."""
    implementation: str  # 'mmrepvgg' or 'mmpretrain'
    arch: str = 'A0'
    with_cp: bool = False
    batch_size: int = 32
    input_size: Tuple[int, int] = (224, 224)
    warmup: int = 1
    rounds: int = 3
    threads: Optional[int] = None
    result: Optional[dict] = field(default=None)


def _resident_bytes() -> int:
    with open('/proc/self/statm') as statm:
        return int(statm.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')


def run_training_probe(probe: TrainingProbe) -> TrainingProbe:
    """Train steps (SGD, cross-entropy on random labels) of the published classifier;
    meant to run alone in a fresh process. Peak memory is the growth of the process's
    peak resident set (``getrusage`` ``ru_maxrss``) over its resident set just before the
    first step: model, optimizer state, activations and workspace, as the OS sees them."""
    import resource  # POSIX only; imported here so the module still imports elsewhere

    if probe.threads:
        torch.set_num_threads(probe.threads)
    model = random_train_classifier(probe.arch, with_cp=probe.with_cp)
    if probe.implementation == 'mmpretrain':
        model = mmpretrain_copy(model, deploy=False, with_cp=probe.with_cp)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    images = torch.randn(probe.batch_size, 3, *probe.input_size)
    labels = torch.randint(0, 1000, (probe.batch_size, ))

    def train_step():
        optimizer.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()

    resident_before = _resident_bytes()
    timing = time_interleaved({'step': train_step}, probe.batch_size, probe.warmup,
                              probe.rounds)['step']
    peak_bytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    probe.result = dict(timing_row(timing), peak_memory_mib=(peak_bytes - resident_before) / 2**20,
                        memory_method='ru_maxrss growth over RSS before the first step, '
                        'fresh process')
    return probe


def run_training_benchmark(settings: BenchmarkSettings, arch: str = 'A0') -> dict:
    """Training rows (see :func:`measure_training`) with the machine and settings."""
    with torch_threads(settings.threads):  # given back afterwards
        return dict(machine=machine_description(), settings=asdict(settings),
                    training=measure_training(settings, arch),
                    load_average_1min_end=os.getloadavg()[0])


def measure_training(settings: BenchmarkSettings, arch: str = 'A0') -> List[dict]:
    """Training images/s and peak memory, this project vs mmpretrain, with and without
    ``with_cp``; each configuration in its own spawned process so peaks do not mix."""
    import multiprocessing

    context = multiprocessing.get_context('spawn')
    rows = []
    for with_cp in (False, True):
        for implementation in ('mmrepvgg', 'mmpretrain'):
            probe = TrainingProbe(implementation, arch, with_cp, settings.train_batch_size,
                                  tuple(settings.input_size), settings.warmup,
                                  settings.train_rounds, settings.threads)
            with context.Pool(1) as pool:
                probe = pool.apply(run_training_probe, (probe, ))
            rows.append(dict(implementation=implementation, arch=arch, with_cp=with_cp,
                             input_size=list(settings.input_size), **probe.result))
    return rows
