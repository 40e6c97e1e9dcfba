"""The benchmark tool produces every row it promises (quick mode: tiny inputs, one round).

Speed itself is not asserted here (the CPU is shared); the numbers are in
docs/benchmarks.md and the targets are checked in the benchmark's own output.
"""
import json
from pathlib import Path

import pytest
import torch

from mmrepvgg.analysis.benchmark import (COMPILED, DEPLOY, MMPRETRAIN_DEPLOY, ONNXRUNTIME,
                                         RECOMMENDED, RESNET18, RESNET50, TRAIN,
                                         mmpretrain_copy, random_train_classifier)
from mmrepvgg.testing import max_relative_error

from conftest import load_tool

REPO = Path(__file__).resolve().parents[1]
A0_CONFIG = str(REPO / 'configs/repvgg-A0_4xb64-coslr-120e_in1k.py')
ALL_PATHS = {TRAIN, DEPLOY, RECOMMENDED, COMPILED, ONNXRUNTIME, MMPRETRAIN_DEPLOY, RESNET18,
             RESNET50}
SCALED_PATHS = {DEPLOY, RECOMMENDED, MMPRETRAIN_DEPLOY}
VARIANT_PATHS = {TRAIN, DEPLOY, RECOMMENDED, MMPRETRAIN_DEPLOY}


benchmark = load_tool('tools/analysis_tools/benchmark.py')
plot_benchmarks = load_tool('tools/analysis_tools/plot_benchmarks.py')


@pytest.fixture
def restore_torch_threads():
    """--threads changes the thread count of this process; give it back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow  # ~30-100 s on 2 shared cores: torch.compile and an ONNX export
def test_quick_benchmark_writes_every_promised_row(tmp_path, capsys, restore_torch_threads):
    output = tmp_path / 'quick.json'
    assert benchmark.main([A0_CONFIG, '--quick', '--threads', '1', '--batch-sizes', '1', '2',
                           '--variants', 'A0', '--json', str(output)]) == 0
    results = json.loads(output.read_text())
    assert results['arch'] == 'A0'
    assert results['machine']['torch_threads'] == 1
    assert results['roof']['gmacs_per_s'] > 0
    for batch_size in (1, 2):
        rows = {row['path']: row for row in results['inference']
                if row['batch_size'] == batch_size}
        assert set(rows) == ALL_PATHS
        assert all(row['images_per_s'] > 0 for row in rows.values())
        assert rows[MMPRETRAIN_DEPLOY]['ratio_to_mmpretrain_deploy'] == 1.0
        assert all(rows[path]['fraction_of_conv_roof'] > 0
                   for path in (DEPLOY, RECOMMENDED, COMPILED, ONNXRUNTIME))
    assert results['onnx_max_relative_error'] < 1e-4
    (conversion, ) = results['conversion']
    assert conversion['arch'] == 'A0' and conversion['ours_s'] > 0
    assert conversion['mmpretrain_s'] > 0
    scaling = results['scaling']
    assert {(row['path'], row['batch_size']) for row in scaling['batch_size']} == {
        (path, size) for path in SCALED_PATHS for size in (1, 2)}
    assert {(row['path'], row['input_size'][0]) for row in scaling['input_size']} == {
        (path, size) for path in SCALED_PATHS for size in (32, 64)}
    variants = {row['path']: row for row in results['variants']}
    assert set(variants) == VARIANT_PATHS
    assert variants[DEPLOY]['max_relative_error_vs_train'] < 1e-5
    assert variants[DEPLOY]['onnx_max_relative_error'] < 1e-4
    printed = capsys.readouterr().out
    assert '## Targets' in printed and 'torch threads: ' in printed
    # The plots of docs/benchmarks.md are made from this JSON.
    assert plot_benchmarks.main([str(output), '--out-dir', str(tmp_path / 'plots')]) == 0
    assert sorted(path.name for path in (tmp_path / 'plots').iterdir()) == sorted(
        plot_benchmarks.PLOTS)


@pytest.mark.slow  # ~40-70 s: four fresh processes
def test_quick_training_benchmark_reports_speed_and_memory_side_by_side(
        tmp_path, restore_torch_threads):
    output = tmp_path / 'train.json'
    assert benchmark.main([A0_CONFIG, '--quick', '--train', '--threads', '1', '--json',
                           str(output)]) == 0
    rows = json.loads(output.read_text())['training']
    assert {(row['implementation'], row['with_cp']) for row in rows} == {
        (implementation, with_cp) for implementation in ('mmrepvgg', 'mmpretrain')
        for with_cp in (False, True)}
    assert all(row['images_per_s'] > 0 and row['peak_memory_mib'] > 0 for row in rows)


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
