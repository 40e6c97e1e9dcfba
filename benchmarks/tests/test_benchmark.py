"""The benchmark tool produces every row it promises (quick mode: tiny inputs, one round).

Speed itself is not asserted here (the CPU is shared); the numbers are in
docs/benchmarks.md and the targets are checked in the benchmark's own output.
"""
import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lab.benchmark import (add_ratios, mmpretrain_copy, openvino_runners_if_installed,
                           random_train_classifier, timing_row,
                           torch_int8_runner_if_installed)
from lab.report import format_inference
from lab.rows import (COMPILED, DEPLOY, INT8_ONNXRUNTIME, INT8_OPENVINO, INT8_PYTORCH,
                      MMPRETRAIN_DEPLOY, ONNXRUNTIME, OPENVINO, RECOMMENDED, RESNET18,
                      RESNET50, TRAIN)
from mmrepvgg.analysis._timing import _Timing as Timing
from mmrepvgg._numerics import max_relative_error

from conftest import int8_conv_weights, load_tool, needs_newer_torch, needs_torch_for_nncf

REPO = Path(__file__).resolve().parents[2]
A0_CONFIG = str(REPO / 'configs/repvgg-A0_4xb64-coslr-120e_in1k.py')
ALL_PATHS = {TRAIN, DEPLOY, RECOMMENDED, COMPILED, ONNXRUNTIME, INT8_ONNXRUNTIME,
             OPENVINO, INT8_OPENVINO, INT8_PYTORCH, MMPRETRAIN_DEPLOY, RESNET18, RESNET50}
SCALED_PATHS = {DEPLOY, RECOMMENDED, MMPRETRAIN_DEPLOY}
VARIANT_PATHS = {TRAIN, DEPLOY, RECOMMENDED, MMPRETRAIN_DEPLOY, ONNXRUNTIME, INT8_ONNXRUNTIME}


benchmark = load_tool('benchmarks/benchmark.py')
plot_benchmarks = load_tool('benchmarks/plot_benchmarks.py')


def assert_consistent_timing(row):
    """images/s, latency and spread of one row are the same measurement."""
    assert row['images_per_s'] == pytest.approx(1e3 * row['batch_size'] /
                                                row['latency_ms_median'])
    assert row['latency_ms_min'] <= row['latency_ms_median'] <= row['latency_ms_max']
    assert row['spread'] == pytest.approx(
        (row['latency_ms_max'] - row['latency_ms_min']) / row['latency_ms_median'])


def test_timing_rows_are_computed_from_the_measured_seconds():
    row = timing_row(Timing(batch_size=16, median_s=0.5, min_s=0.4, max_s=0.6, rounds=5))
    assert row == dict(batch_size=16, images_per_s=32.0, latency_ms_median=500.0,
                       latency_ms_min=400.0, latency_ms_max=600.0,
                       spread=pytest.approx(0.4), rounds=5)


def _known_rows():
    rows = {MMPRETRAIN_DEPLOY: timing_row(Timing(16, 0.8, 0.8, 0.8, 1)),
            INT8_ONNXRUNTIME: timing_row(Timing(16, 0.2, 0.2, 0.2, 1)),
            ONNXRUNTIME: timing_row(Timing(16, 0.5, 0.5, 0.5, 1))}
    add_ratios(rows)
    return rows


def _report_results(inference: list, **info) -> dict:
    """What a run returns, for the report: a made-up machine and these rows."""
    return dict(
        machine=dict(cpu='cpu', logical_cpus=2, torch_threads=2, torch='t', mmpretrain='m',
                     onnxruntime='o', load_average_1min=1.0),
        settings=dict(input_size=[224, 224], warmup=1, rounds=1),
        roof=dict(gmacs_per_s=30.0, shape=[8, 256, 56, 56]), deploy_gmacs_per_image=1.36,
        conversion=[], inference=inference, **info)


def test_ratios_divide_each_row_by_the_mmpretrain_row_of_the_same_run():
    rows = _known_rows()
    assert rows[INT8_ONNXRUNTIME]['ratio_to_mmpretrain_deploy'] == pytest.approx(4.0)
    assert rows[ONNXRUNTIME]['ratio_to_mmpretrain_deploy'] == pytest.approx(1.6)


@pytest.mark.parametrize('int8_seconds, met', [(0.2, True), (0.3, False)])
def test_int8_target_row_compares_to_three_times_mmpretrain_deploy(int8_seconds, met):
    rows = _known_rows()
    rows[INT8_ONNXRUNTIME] = timing_row(Timing(16, int8_seconds, int8_seconds, int8_seconds,
                                               1))
    add_ratios(rows)
    results = dict(inference=[dict(path=path, **row) for path, row in rows.items()])
    (target, ) = [target for target in benchmark.check_targets(results, 'A0')
                  if target['target'].startswith(INT8_ONNXRUNTIME)
                  and 'mmpretrain deploy' in target['target']]
    assert target['met'] is met
    assert target['measured'] == f'{0.8 / int8_seconds:.2f}x'
    assert benchmark.check_targets(results, 'B0') == []  # the target is A0's


def test_inference_table_prints_the_ratio_of_the_rows_it_prints():
    rows = _known_rows()
    results = _report_results([dict(path=path, **row) for path, row in rows.items()])
    table = format_inference(results)
    assert f'| {INT8_ONNXRUNTIME} | 16 | 80.0 | 200.0 | 0.00 | 4.00 | - |' in table
    assert f'| {MMPRETRAIN_DEPLOY} | 16 | 20.0 | 800.0 | 0.00 | 1.00 | - |' in table


@pytest.mark.parametrize('vnni, onednn_cap, target', [
    (True, None, 3.0),  # a VNNI CPU
    (False, None, 1.8),  # x86 without VNNI
    (True, 'AVX2', 1.8),  # a VNNI CPU whose oneDNN is capped to AVX2
])
def test_int8_targets_compare_each_runtime_to_onnx_runtime_fp32_at_the_cpus_bar(
        vnni, onednn_cap, target):
    fp32_s, int8_ort_s, int8_ov_s = 1.0, 0.4, 0.25  # 2.5x and 4x ONNX Runtime FP32
    rows = {ONNXRUNTIME: timing_row(Timing(16, fp32_s, fp32_s, fp32_s, 1)),
            INT8_ONNXRUNTIME: timing_row(Timing(16, int8_ort_s, int8_ort_s, int8_ort_s, 1)),
            INT8_OPENVINO: timing_row(Timing(16, int8_ov_s, int8_ov_s, int8_ov_s, 1)),
            MMPRETRAIN_DEPLOY: timing_row(Timing(16, fp32_s, fp32_s, fp32_s, 1))}
    add_ratios(rows)
    results = dict(machine=dict(cpu_vnni=vnni, onednn_isa_cap=onednn_cap),
                   inference=[dict(path=path, **row) for path, row in rows.items()])
    targets = {row['target']: row for row in benchmark.int8_targets(results)}
    assert len(targets) == 2 and all(f'>= {target}x {ONNXRUNTIME}' in name
                                     for name in targets)
    by_path = {path: row for name, row in targets.items() for path in
               (INT8_ONNXRUNTIME, INT8_OPENVINO) if name.startswith(path)}
    assert by_path[INT8_ONNXRUNTIME]['measured'] == '2.50x'
    assert by_path[INT8_ONNXRUNTIME]['met'] is (2.5 >= target)
    assert by_path[INT8_OPENVINO]['measured'] == '4.00x' and by_path[INT8_OPENVINO]['met']
    assert all(row in benchmark.check_targets(results, 'A0') for row in targets.values())


def test_without_the_openvino_extra_the_benchmark_has_no_openvino_rows_and_says_why(
        monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, 'openvino', None)  # import openvino fails
    monkeypatch.delitem(sys.modules, 'mmrepvgg.deploy.openvino_runtime', raising=False)
    info = {}
    assert openvino_runners_if_installed(str(tmp_path / 'absent.onnx'), (1, 3, 32, 32), 1,
                                         info) == {}
    assert 'mmrepvgg[openvino]' in info['openvino_missing'] and 'openvino' not in info
    results = _report_results([], **info)
    assert f"No OpenVINO rows: {info['openvino_missing']}" in format_inference(results)


@needs_newer_torch(hasattr(torch, 'export') and hasattr(torch.export, 'Dim'),
                   'PT2E (torch.export.Dim), checked before torchao')
def test_without_torchao_the_benchmark_has_no_pytorch_int8_row_and_says_why(monkeypatch):
    for name in [name for name in sys.modules if name.split('.')[0] == 'torchao']:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, 'torchao', None)  # import torchao fails
    info = {}
    model = random_train_classifier(dict(num_blocks=(1, 1, 1, 1),
                                         width_factor=(0.25, 0.25, 0.25, 0.25)))
    assert torch_int8_runner_if_installed(model, (1, 3, 32, 32), info) == {}
    assert 'mmrepvgg[torch-int8]' in info['torch_int8_missing'] and 'torchao' not in info
    results = _report_results([], **info)
    (line, ) = [line for line in format_inference(results).splitlines() if 'INT8' in line]
    assert line == f"No PyTorch INT8 row: {info['torch_int8_missing']}"


@pytest.mark.slow  # ~30-150 s on 2 shared cores: torch.compile (FP32, PT2E INT8), ONNX export
@needs_torch_for_nncf  # a promised row is OpenVINO INT8
def test_quick_benchmark_writes_every_promised_row(tmp_path, capsys):
    output = tmp_path / 'quick.json'
    run_threads = 2
    # The tool as a user runs it, in a process (and session) of its own.
    run = subprocess.run([sys.executable, str(REPO / 'benchmarks/benchmark.py'),
                          A0_CONFIG, '--quick', '--threads', str(run_threads),
                          '--batch-sizes', '1', '2', '--variants', 'A0', '--json',
                          str(output)], capture_output=True, text=True, cwd=tmp_path,
                         start_new_session=True)
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads(output.read_text())
    assert results['arch'] == 'A0'
    assert results['machine']['torch_threads'] == run_threads
    roof = results['roof']
    assert roof['shape'] == [1, 32, 16, 16]
    assert roof['gmacs'] == pytest.approx(32 * 32 * 9 * 16 * 16 / 1e9)  # one (1, 32, 16, 16)
    for batch_size in (1, 2):
        rows = {row['path']: row for row in results['inference']
                if row['batch_size'] == batch_size}
        assert set(rows) == ALL_PATHS
        for row in rows.values():
            assert_consistent_timing(row)
            assert row['ratio_to_mmpretrain_deploy'] == pytest.approx(
                row['images_per_s'] / rows[MMPRETRAIN_DEPLOY]['images_per_s'])
        for path in (DEPLOY, RECOMMENDED, COMPILED, ONNXRUNTIME, OPENVINO):
            assert rows[path]['fraction_of_conv_roof'] == pytest.approx(
                rows[path]['images_per_s'] * results['deploy_gmacs_per_image']
                / roof['gmacs_per_s'])
        for path in (INT8_ONNXRUNTIME, INT8_OPENVINO, INT8_PYTORCH):  # FP32 roof: FP32 rows
            assert 'fraction_of_conv_roof' not in rows[path]
    assert results['onnx_max_relative_error'] < 1e-4
    import openvino
    assert results['openvino'] == openvino.__version__
    assert results['torchao'] == importlib.metadata.version('torchao')
    (conversion, ) = results['conversion']
    assert conversion['arch'] == 'A0' and conversion['rounds'] == 1
    assert conversion['speedup'] == pytest.approx(conversion['mmpretrain_s'] /
                                                  conversion['ours_s'])
    scaling = results['scaling']
    assert {(row['path'], row['batch_size']) for row in scaling['batch_size']} == {
        (path, size) for path in SCALED_PATHS for size in (1, 2)}
    assert {(row['path'], row['input_size'][0]) for row in scaling['input_size']} == {
        (path, size) for path in SCALED_PATHS for size in (32, 64)}
    variants = {row['path']: row for row in results['variants']}
    assert set(variants) == VARIANT_PATHS
    assert variants[DEPLOY]['max_relative_error_vs_train'] < 1e-5
    assert variants[DEPLOY]['onnx_max_relative_error'] < 1e-4
    printed = run.stdout
    assert '## Targets' in printed and 'torch threads: ' in printed
    # The plots of docs/benchmarks.md are made from this JSON.
    assert plot_benchmarks.main([str(output), '--out-dir', str(tmp_path / 'plots')]) == 0
    assert sorted(path.name for path in (tmp_path / 'plots').iterdir()) == sorted(
        plot_benchmarks.PLOTS)
    # ... but never over that JSON, even where it has a plot's name.
    disguised = tmp_path / 'plots' / next(iter(plot_benchmarks.PLOTS))
    disguised.write_bytes(output.read_bytes())
    assert plot_benchmarks.main([str(disguised), '--out-dir', str(tmp_path / 'plots')]) == 1
    assert disguised.read_bytes() == output.read_bytes()
    assert 'is the results JSON' in capsys.readouterr().err


@pytest.mark.slow  # ~40-70 s: four fresh processes
def test_quick_training_benchmark_reports_speed_and_memory_side_by_side(tmp_path):
    output = tmp_path / 'train.json'
    assert benchmark.main([A0_CONFIG, '--quick', '--train', '--threads', '1', '--json',
                           str(output)]) == 0
    rows = json.loads(output.read_text())['training']
    assert {(row['implementation'], row['with_cp']) for row in rows} == {
        (implementation, with_cp) for implementation in ('mmrepvgg', 'mmpretrain')
        for with_cp in (False, True)}
    # A step holds at least the gradients and SGD momentum of A0's ~8.3 M parameters.
    parameter_mib = sum(param.numel() for param in random_train_classifier('A0')
                        .parameters()) * 4 / 2**20
    for row in rows:
        assert_consistent_timing(row)
        assert row['peak_memory_mib'] >= 2 * parameter_mib


@pytest.mark.parametrize('arch', ['A0', 'D2se'])
def test_mmpretrain_copy_holds_the_same_weights(arch):
    train_model = random_train_classifier(arch)
    images = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert max_relative_error(
            train_model(images), mmpretrain_copy(train_model, deploy=False)(images)) == 0


def test_benchmark_keeps_an_existing_json_without_force(tmp_path, capsys):
    output = tmp_path / 'results.json'
    output.write_text('precious')
    with pytest.raises(SystemExit) as exit_info:
        benchmark.main([A0_CONFIG, '--quick', '--json', str(output)])
    assert exit_info.value.code == 2
    assert '--force' in capsys.readouterr().err
    assert output.read_text() == 'precious'


def test_plot_tool_explains_results_without_a_variant_sweep(tmp_path, capsys):
    results = tmp_path / 'results.json'
    results.write_text(json.dumps(dict(variants=[])))
    assert plot_benchmarks.main([str(results), '--out-dir', str(tmp_path)]) == 1
    assert '--variants all' in capsys.readouterr().err


def test_benchmark_names_an_unknown_variant(capsys):
    with pytest.raises(SystemExit):
        benchmark.main([A0_CONFIG, '--quick', '--variants', 'A9'])
    assert '--variants A9: unknown' in capsys.readouterr().err


def test_benchmark_refuses_a_deploy_checkpoint(tmp_path, capsys):
    deploy_model = random_train_classifier('A0')
    deploy_model.backbone.switch_to_deploy()
    checkpoint = tmp_path / 'deploy.pth'
    torch.save({'state_dict': deploy_model.state_dict()}, checkpoint)
    assert benchmark.main([A0_CONFIG, '--quick', '--checkpoint', str(checkpoint)]) == 1
    assert 'pass a train-form checkpoint' in capsys.readouterr().err


@needs_torch_for_nncf
def test_benchmark_json_never_replaces_a_file_that_appears_during_the_run(
        tmp_path, capsys, monkeypatch):
    output = tmp_path / 'results.json'
    measure = benchmark.run_inference_benchmark

    def another_run_writes_it_meanwhile(*args, **kwargs):
        output.write_text('the other run')
        return measure(*args, **kwargs)

    monkeypatch.setattr(benchmark, 'run_inference_benchmark',
                        another_run_writes_it_meanwhile)
    assert benchmark.main([A0_CONFIG, '--quick', '--no-compile', '--json', str(output)]) == 1
    assert 'exists' in capsys.readouterr().err
    assert output.read_text() == 'the other run'


AVX2_ONLY_CPUINFO = 'model name\t: AVX2 host\nflags\t\t: fpu sse2 avx avx2 fma\n'


@pytest.mark.parametrize('cpuinfo, weight_bits, largest_weight', [
    (AVX2_ONLY_CPUINFO, None, 64),  # the tools' choice there: 7-bit weights
    (AVX2_ONLY_CPUINFO, 8, 127),
    ('model name\t: VNNI host\nflags\t\t: avx2 avx512f avx512_vnni\n', None, 127),
])
def test_the_int8_row_runs_the_weights_the_tools_write_on_this_cpu(
        cpuinfo, weight_bits, largest_weight, tmp_path, monkeypatch):
    from lab import benchmark as benchmark_module
    from lab.benchmark import FP32_ONNX_FILE, INT8_ONNX_FILE, onnxruntime_runners
    from lab.emulated_cpu import seen_cpu
    from mmrepvgg.models import reparameterize_model
    monkeypatch.setattr(benchmark_module, 'seen_cpu', lambda threads=None: seen_cpu(
        threads, cpuinfo_text=cpuinfo, architecture='x86_64'))
    model = reparameterize_model(random_train_classifier(
        dict(num_blocks=(1, 1, 1, 1), width_factor=(0.25, 0.25, 0.25, 0.25))))
    runners, _ = onnxruntime_runners(model, str(tmp_path), (2, 3, 32, 32), 1, weight_bits)
    assert set(runners) == {ONNXRUNTIME, INT8_ONNXRUNTIME}
    written = sorted(path.name for path in tmp_path.iterdir())
    assert written == [FP32_ONNX_FILE, INT8_ONNX_FILE]
    weights = int8_conv_weights(tmp_path / INT8_ONNX_FILE)
    assert max(int(abs(w.astype(int)).max()) for w in weights) == largest_weight


def test_the_machine_line_names_the_emulated_cpu_and_the_int8_weights_and_kernels():
    machine = dict(cpu='Xeon', cpu_isa=['AVX2'], cpu_hidden_isa=['AVX-512', 'AVX512-VNNI'],
                   int8_weight_bits=7, int8_kernels='u8s8', logical_cpus=2, torch_threads=1,
                   torch='t', mmpretrain='m', onnxruntime='o', load_average_1min=1.0)
    results = dict(machine=machine, settings=dict(input_size=[224, 224], warmup=1, rounds=1),
                   roof=dict(gmacs_per_s=30.0, shape=[8, 256, 56, 56]),
                   deploy_gmacs_per_image=1.36, conversion=[], inference=[])
    line = format_inference(dict(results, openvino='v', torchao='a')).splitlines()[0]
    assert line.startswith('Machine: Xeon (AVX2; AVX-512, AVX512-VNNI hidden from CPUID: '
                           'AVX2-only CPU emulated; ONNX Runtime INT8: 7-bit weights on u8s8 '
                           'kernels), 2 logical CPUs')
    assert 'onnxruntime o, openvino v, torchao a;' in line
