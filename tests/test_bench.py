"""bench.py runs on the CPU at a tiny size: every row and every ΔW path (a smoke test, no timing claims); so do
scripts/profile_step.py and scripts/peft_bench.py, whose PEFT rows train the same tensors as ours."""

import json
import math
import os
import shlex
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
import torch

import bench
import export
import spectral_ft
from command_line import WORDS
from run.errors import UsageError


import ast
import inspect

import train
from bench import TrainStep
def test_bench_smoke_runs_every_row_and_delta_path(tmp_path, capsys):
    out = tmp_path / "bench.json"
    results, deltas = bench.main(["--device", "cpu", "--layers", "1", "--hidden", "16", "--batch", "2", "--seq", "8",
                                  "--steps", "2", "--warmup", "1", "--delta-sizes", "16", "--delta-n", "4,40",
                                  "--json", str(out)])
    assert [r["row"] for r in results][:2] == ["floor", "lora"]
    assert {r["row"] for r in results} == set(bench.ROWS)
    for r in results:
        assert r["ms"] > 0 and math.isfinite(r["tokens_per_s"])
        assert math.isnan(r["peak_mib"]) and math.isnan(r["saved_mib"])  # memory is measured on CUDA only
    by_row = {r["row"]: r for r in results}
    assert by_row["floor"]["trainable_adapter"] == 0 and by_row["lora"]["trainable_adapter"] == 2 * (2 * 8 * 16)
    assert [(d["d"], d["n"]) for d in deltas] == [(16, 4), (16, 40)]
    assert out.exists()
    assert "x floor" in capsys.readouterr().out


def test_bench_per_layer_times_one_layer_of_every_method(tmp_path):
    results, deltas = bench.main(["--device", "cpu", "--per-layer", "--hidden", "16", "--batch", "2", "--seq", "8",
                                  "--steps", "2", "--warmup", "1", "--json", str(tmp_path / "layers.json")])
    assert [r["row"] for r in results] == ["floor", *bench.spectral_ft.METHODS] and deltas == []
    assert all(r["ms"] > 0 for r in results)
    assert (tmp_path / "layers.json").exists()


def test_bench_under_torchrun_times_data_parallel_steps_and_counts_every_process_tokens(tmp_path):
    """Two gloo processes: one table (process 0's), tokens/s over both processes' batches."""
    out = tmp_path / "ddp.json"
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(Path(bench.__file__).parent / "bench.py"), "--device", "cpu", "--layers", "1", "--hidden", "16", "--batch", "2",
                           "--seq", "8", "--steps", "2", "--warmup", "1", "--methods", "lora,loca",
                           "--json", str(out)], cwd=tmp_path, capture_output=True, text=True,
                          env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("x floor") == 1 and "2 processes, --batch each" in done.stdout
    report = json.loads(out.read_text())
    assert report["processes"] == 2 and [r["row"] for r in report["steps"]] == ["floor", "lora", "loca"]
    for r in report["steps"]:
        assert r["tokens_per_s"] == pytest.approx(2 * 2 * 8 / r["ms"] * 1e3)
    assert report["delta"] == []


def the_step(function):
    """The statements of a function from `step_loss = 0.0` to the optimizer's zero_grad, as ast dumps."""
    tree = ast.parse(inspect.getsource(function).strip() if not inspect.isclass(function) else "")
    body = [node for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.While))][-1].body
    lines = [ast.dump(node) for node in body]
    start = next(i for i, line in enumerate(lines) if "step_loss" in line)
    end = next(i for i, line in enumerate(lines) if "zero_grad" in line)
    return lines[start:end + 1]


def test_bench_s_step_is_train_py_s_loop_body_line_for_line():
    """bench.TrainStep times the body of train.py's loop, not a variant of it: the same statements (forward,
    weighted loss, backward, the all-reduce, optimizer and schedules), compared as syntax trees."""
    ours = the_step(TrainStep.__call__)
    loop = the_step(train.train_loop)
    assert len(ours) == 8 and any("backward" in line for line in ours)
    assert ours == loop


def test_bench_times_train_py_s_own_step(monkeypatch):
    """bench.py's rows run TrainStep (train.py's step), not a copy of it."""
    calls, call = [], TrainStep.__call__
    monkeypatch.setattr(TrainStep, "__call__", lambda self, parts, examples: calls.append(self.mode) or call(
        self, parts, examples))
    results, _ = bench.main(["--device", "cpu", "--layers", "1", "--hidden", "16", "--batch", "2", "--seq", "8",
                             "--steps", "2", "--warmup", "1", "--methods", "lora", "--delta-sizes", ""])
    assert [r["row"] for r in results] == ["floor", "lora"]
    assert calls == ["eager"] * 2 * (1 + 2)  # warm-up and timed steps of both rows (no graphs on the CPU)
    assert all("step_ms" not in r for r in results)


def test_the_smoke_test_a_cpu_machine_is_told_to_run_stays_at_its_width_and_says_its_steps_are_eager(
        tmp_path, monkeypatch, capsys):
    """Without a GPU, bench.py suggests a CPU smoke test; that very command times eager steps only (the
    header says so, no graph steps) and its ΔW table stays at the model's width (--hidden), not the
    default d up to 4096 that kept it busy for 12 minutes."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UsageError) as error:
        bench.main([])
    message = str(error.value)
    assert "python bench.py " in message, message  # a command to copy
    suggestion = message.split("python bench.py ", 1)[1]
    assert suggestion == bench.SMOKE_TEST
    flags = shlex.split(suggestion)
    hidden = int(flags[flags.index("--hidden") + 1])
    results, deltas = bench.main(flags + ["--json", str(tmp_path / "smoke.json")])
    assert {r["row"] for r in results} == set(bench.ROWS) and all("step_ms" not in r for r in results)
    assert deltas and {d["d"] for d in deltas} == {hidden}
    header = capsys.readouterr().out.splitlines()[0]
    assert "eager steps only (no CUDA graphs on the CPU)" in header and "graph steps" not in header


def test_the_delta_table_keeps_its_default_sizes_at_full_width_and_takes_explicit_ones(monkeypatch):
    seen = []
    monkeypatch.setattr(bench, "run", lambda args, rows, device, world: seen.append(args.delta_sizes) or ([], []))
    narrow = ["--device", "cpu", "--hidden", "8"]
    for argv in (narrow, narrow + ["--delta-sizes", ""], narrow + ["--delta-sizes", "64,128"], ["--device", "cpu"]):
        bench.main(argv)
    assert seen == [[8], [], [64, 128], [256, 512, 1024, 2048, 4096]]


@pytest.mark.parametrize("row", [r for r in bench.ROWS if r not in ("fora", "dfora")])
def test_a_row_s_model_is_made_on_the_device_it_is_built_for_adapters_and_all(row, monkeypatch):
    """bench.build makes the backbone on its device (a GPU initializes it in a fraction of the CPU's time) and the
    adapters follow their frozen layer there, with the model not moved afterwards (its .to does nothing here): on the
    meta device every tensor must be made there. FoRA and DFoRA read W0's statistics as numbers (.item()), which a
    meta tensor has none of."""
    import argparse

    monkeypatch.setattr(bench.SequenceClassifier, "to", lambda model, *args, **kwargs: model)
    model = bench.build(argparse.Namespace(model="roberta-base", layers=1, hidden=0), row, torch.device("meta"))
    assert {t.device.type for t in [*model.parameters(), *model.buffers()]} == {"meta"}


# -----------------------------------------------------------------------------
# scripts/profile_step.py: where the step's time goes

import importlib.util  # noqa: E402

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_spec = importlib.util.spec_from_file_location("profile_step", Path(bench.__file__).parent / "scripts" / "profile_step.py")
profile_step = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(profile_step)

# Kernel names as torch.profiler reports them (cuBLAS's sm90_xmma and nvjet GEMMs on an H100, CUTLASS, ATen, Inductor),
# from the issue and public traces, not yet from a GPU run of this project; and ATen ops as the CPU profile names them.
KERNELS = [
    ("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64_warpgroupsize1x1x1_execute_segment_k_off_kernel"
     "__5x_cublas", "matmul"),
    ("nvjet_tst_128x64_64x8_1x1_v_bz_coopB_NNT", "matmul"),
    ("nvjet_tst_64x32_64x16_2x2_2cta_h_bz_splitK_TNT", "matmul"),
    ("ampere_bf16_s16816gemm_bf16_128x64_ldg8_f2f_stages_64x3_tn", "matmul"),
    ("void cutlass::Kernel2<cutlass_80_wmma_tensorop_bf16_s161616gemm_bf16_32x32_128x1_tn_align8>(cutlass_80_wmma_"
     "tensorop_bf16_s161616gemm_bf16_32x32_128x1_tn_align8::Params)", "matmul"),
    ("void cublasLt::splitKreduce_kernel<32, 16, int, float, __nv_bfloat16, float, __nv_bfloat16, true, false, false>"
     "(cublasLt::cublasSplitKParams<float>, float const*, __nv_bfloat16 const*, __nv_bfloat16*, float const*, "
     "float const*, __nv_bfloat16 const*, float const*, __nv_bfloat16*, void*, long, float*, int*)", "matmul"),
    ("gemv2T_kernel_val<int, int, __nv_bfloat16, __nv_bfloat16, float, 128, 16, 4, 4, false, false>", "matmul"),
    ("triton_tem_fused_mm_0", "matmul"),
    ("aten::addmm", "matmul"), ("aten::mm", "matmul"), ("aten::bmm", "matmul"),
    ("fmha_cutlassF_bf16_aligned_64x64_rf_sm80(PyTorchMemEffAttention::AttentionKernel<cutlass::bfloat16_t, "
     "cutlass::arch::Sm80, true, 64, 64, 64, true, true>::Params)", "attention"),
    ("fmha_cutlassB_bf16_aligned_64x64_k64_seqaligned_sm80(PyTorchMemEffAttention::AttentionBackwardKernel<"
     "cutlass::arch::Sm80, cutlass::bfloat16_t, true, false, true, 64, 64, 64, true>::Params)", "attention"),
    ("void pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<64, 128, 128, 4, false, false, cutlass::"
     "bfloat16_t, Flash_kernel_traits<64, 128, 128, 4, cutlass::bfloat16_t> >, false, false, false, false, true, "
     "true, false>(pytorch_flash::Flash_fwd_params)", "attention"),
    ("void pytorch_flash::flash_bwd_dot_do_o_kernel<true, Flash_bwd_kernel_traits<64, 128, 128, 8, 2, 4, 2, false, "
     "false, cutlass::bfloat16_t, Flash_kernel_traits<64, 128, 128, 8, cutlass::bfloat16_t> > >"
     "(pytorch_flash::Flash_bwd_params)", "attention"),
    ("cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_3_64x64x64_4x1x1_kernel0_0", "attention"),
    ("aten::scaled_dot_product_attention / aten::bmm", "attention"),
    ("triton_per_fused_native_layer_norm_0", "norm_act_elementwise"),
    ("triton_poi_fused_gelu_1", "norm_act_elementwise"),
    ("triton_red_fused__to_copy_add_native_layer_norm_native_layer_norm_backward_2", "norm_act_elementwise"),
    ("void at::native::(anonymous namespace)::vectorized_layer_norm_kernel<c10::BFloat16, float>(int, float, "
     "c10::BFloat16 const*, c10::BFloat16 const*, c10::BFloat16 const*, float*, float*, c10::BFloat16*)",
     "norm_act_elementwise"),
    ("void at::native::(anonymous namespace)::GammaBetaBackwardCUDAKernel_32x32<float, float>(long, long, float "
     "const*, float const*, float const*, float const*, float*, float*)", "norm_act_elementwise"),
    ("void at::native::vectorized_elementwise_kernel<4, at::native::GeluCUDAKernelImpl(at::TensorIteratorBase&, "
     "at::native::GeluType)::{lambda()#2}::operator()() const::{lambda()#4}::operator()() const::{lambda(c10::"
     "BFloat16)#1}, std::array<char*, 2ul> >(int, at::native::GeluCUDAKernelImpl(at::TensorIteratorBase&, "
     "at::native::GeluType)::{lambda()#2}::operator()() const::{lambda()#4}::operator()() const::{lambda(c10::"
     "BFloat16)#1}, std::array<char*, 2ul>)", "norm_act_elementwise"),
    ("void at::native::(anonymous namespace)::fused_dropout_kernel_vec<c10::BFloat16, float, unsigned int, 1, 8, "
     "bool>(at::cuda::detail::TensorInfo<c10::BFloat16 const, unsigned int>, at::cuda::detail::TensorInfo<c10::"
     "BFloat16, unsigned int>, at::cuda::detail::TensorInfo<bool, unsigned int>, unsigned int, float, "
     "at::PhiloxCudaState)", "norm_act_elementwise"),
    ("void at::native::(anonymous namespace)::philox_kernel<float>", "norm_act_elementwise"),
    ("void at::native::(anonymous namespace)::cunn_SoftMaxForward<4, float, float, float, at::native::(anonymous "
     "namespace)::LogSoftMaxForwardEpilogue>(float*, float const*, int)", "norm_act_elementwise"),
    ("void at::native::elementwise_kernel<128, 4, at::native::gpu_kernel_impl_nocast<at::native::BinaryFunctor<"
     "float, float, float, at::native::binary_internal::MulFunctor<float> > >(at::TensorIteratorBase&, at::native::"
     "BinaryFunctor<float, float, float, at::native::binary_internal::MulFunctor<float> > const&)::{lambda(int)#1}>"
     "(int, at::native::gpu_kernel_impl_nocast<at::native::BinaryFunctor<float, float, float, at::native::"
     "binary_internal::MulFunctor<float> > >(at::TensorIteratorBase&, at::native::BinaryFunctor<float, float, "
     "float, at::native::binary_internal::MulFunctor<float> > const&)::{lambda(int)#1})", "norm_act_elementwise"),
    ("void at::native::reduce_kernel<512, 1, at::native::ReduceOp<float, at::native::func_wrapper_t<float, "
     "at::native::sum_functor<float, float, float>::operator()(at::TensorIterator&)::{lambda(float, float)#1}>, "
     "unsigned int, float, 4> >(at::native::ReduceOp<float, at::native::func_wrapper_t<float, at::native::"
     "sum_functor<float, float, float>::operator()(at::TensorIterator&)::{lambda(float, float)#1}>, unsigned int, "
     "float, 4>)", "norm_act_elementwise"),
    ("aten::native_layer_norm", "norm_act_elementwise"), ("aten::gelu_backward", "norm_act_elementwise"),
    ("aten::add_", "norm_act_elementwise"),
    ("void at::native::(anonymous namespace)::fused_adam_kernel", "optimizer"),
    ("void at::native::(anonymous namespace)::multi_tensor_apply_kernel<at::native::(anonymous namespace)::"
     "FusedOptimizerTensorListMetadata<4>, at::native::(anonymous namespace)::FusedAdamMathFunctor<float, 4, "
     "(at::native::ADAM_MODE)1, false>, double*, double, double, double, double, double, bool, double*, double*>"
     "(at::native::(anonymous namespace)::FusedOptimizerTensorListMetadata<4>, at::native::(anonymous namespace)::"
     "FusedAdamMathFunctor<float, 4, (at::native::ADAM_MODE)1, false>, double*, double, double, double, double, "
     "double, bool, double*, double*)", "optimizer"),
    ("void at::native::(anonymous namespace)::multi_tensor_apply_kernel<at::native::(anonymous namespace)::"
     "TensorListMetadata<2>, at::native::(anonymous namespace)::BinaryOpListAlphaFunctor<float, 2, 2, 0>, "
     "std::plus<float>, float>(at::native::(anonymous namespace)::TensorListMetadata<2>, at::native::(anonymous "
     "namespace)::BinaryOpListAlphaFunctor<float, 2, 2, 0>, std::plus<float>, float)", "optimizer"),
    ("aten::_fused_adamw_", "optimizer"), ("Optimizer.step#AdamW.step / aten::addcdiv_", "optimizer"),
    ("Memcpy HtoD (Pageable -> Device)", "copy_memset"), ("Memcpy DtoD (Device -> Device)", "copy_memset"),
    ("Memset (Device)", "copy_memset"),
    ("void at::native::vectorized_elementwise_kernel<4, at::native::FillFunctor<float>, std::array<char*, 1ul> >"
     "(int, at::native::FillFunctor<float>, std::array<char*, 1ul>)", "copy_memset"),
    ("void at::native::unrolled_elementwise_kernel<at::native::direct_copy_kernel_cuda(at::TensorIteratorBase&)::"
     "{lambda()#3}::operator()() const::{lambda()#7}::operator()() const::{lambda(float)#1}, std::array<char*, 2ul>, "
     "4, TrivialOffsetCalculator<1, unsigned int>, TrivialOffsetCalculator<1, unsigned int>, at::native::memory::"
     "LoadWithCast<1>, at::native::memory::StoreWithCast<1> >(int, at::native::direct_copy_kernel_cuda(at::"
     "TensorIteratorBase&)::{lambda()#3}::operator()() const::{lambda()#7}::operator()() const::{lambda(float)#1}, "
     "std::array<char*, 2ul>, TrivialOffsetCalculator<1, unsigned int>, TrivialOffsetCalculator<1, unsigned int>, "
     "at::native::memory::LoadWithCast<1>, at::native::memory::StoreWithCast<1>)", "copy_memset"),
    ("void at::native::(anonymous namespace)::CatArrayBatchedCopy<at::native::(anonymous namespace)::OpaqueType<2>, "
     "unsigned int, 2, 64, 64>(at::native::(anonymous namespace)::OpaqueType<2>*, at::native::(anonymous namespace)::"
     "CatArrInputTensorMetadata<at::native::(anonymous namespace)::OpaqueType<2>, unsigned int, 64, 64>, at::native::"
     "(anonymous namespace)::TensorSizeStride<unsigned int, 4u>, int, unsigned int)", "copy_memset"),
    ("aten::copy_", "copy_memset"),
    ("void at::native::(anonymous namespace)::indexSelectLargeIndex<c10::BFloat16, long, unsigned int, 2, 2, -2, true>"
     "(at::cuda::detail::TensorInfo<c10::BFloat16, unsigned int>, at::cuda::detail::TensorInfo<c10::BFloat16 const, "
     "unsigned int>, at::cuda::detail::TensorInfo<long const, unsigned int>, int, int, unsigned int, unsigned int, "
     "long)", "other"),
    ("void at::native::(anonymous namespace)::nll_loss_forward_reduce_cuda_kernel_2d<float, float, long>(float*, "
     "float*, float const*, long const*, float const*, bool, long, long, long, long)", "other"),
    ("aten::empty_strided", "other"),
]


@pytest.mark.parametrize("name, expected", KERNELS)
def test_profile_step_puts_each_real_kernel_name_in_its_category(name, expected):
    assert profile_step.category(name) == expected
    assert expected in profile_step.CATEGORIES


intervals = st.lists(st.tuples(st.integers(0, 1000), st.integers(0, 200)).map(lambda t: (t[0], t[0] + t[1])),
                     max_size=30)


@settings(max_examples=200, deadline=None)
@given(intervals)
def test_busy_time_is_at_most_the_summed_durations_and_the_span(spans):
    busy = profile_step.union_length(spans)
    assert 0 <= busy <= sum(b - a for a, b in spans)
    assert busy <= (max(b for _, b in spans) - min(a for a, _ in spans) if spans else 0)
    covered = {t for a, b in spans for t in range(a, b)}  # unit steps: the union counted directly
    assert busy == len(covered)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 50), st.integers(0, 50)), max_size=30), st.randoms())
def test_busy_time_of_disjoint_kernels_is_their_summed_durations(gaps_and_lengths, rng):
    spans, at = [], 0
    for gap, length in gaps_and_lengths:
        spans.append((at + gap, at + gap + length))
        at += gap + length
    rng.shuffle(spans)
    assert profile_step.union_length(spans) == sum(b - a for a, b in spans)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1000), st.integers(0, 200), st.sampled_from("abc")), max_size=30))
def test_busy_shares_of_the_categories_add_up_to_the_busy_time(kernels):
    labelled = [(a, a + length, label) for a, length, label in kernels]
    shares = profile_step.share_busy(labelled)
    assert sum(shares.values()) == pytest.approx(profile_step.union_length([(a, b) for a, b, _ in labelled]))
    for label, share in shares.items():  # a label gets at most the union of its own kernels
        own = [(a, b) for a, b, other in labelled if other == label]
        assert share <= profile_step.union_length(own) + 1e-9


@settings(max_examples=100, deadline=None)
@given(st.tuples(st.integers(0, 100), st.integers(0, 100)).map(sorted), intervals)
def test_an_op_s_own_time_is_its_interval_outside_its_children(interval, holes):
    pieces = profile_step.minus(tuple(interval), holes)
    inside = set(range(*interval)) - {t for a, b in holes for t in range(a, b)}
    assert {t for a, b in pieces for t in range(a, b)} == inside
    assert sum(b - a for a, b in pieces) == len(inside)  # the pieces do not overlap


def test_profile_step_on_the_cpu_prints_every_row_with_categories_that_add_up_to_busy(tmp_path, capsys):
    """bench.py's smoke-test shape: each row's line, its categories adding up to its busy time (within the printed
    rounding), gaps = wall - busy, the JSON with the same numbers and a Chrome trace per row."""
    flags = "--device cpu --layers 1 --hidden 32 --batch 2 --seq 16 --steps 2 --warmup 1".split()
    results = profile_step.main(flags + ["--methods", "floor,lora,loca", "--top", "3", "--json",
                                         str(tmp_path / "p.json"), "--trace", str(tmp_path / "t.json")])
    lines = capsys.readouterr().out.splitlines()
    header = lines.index(next(line for line in lines if line.startswith("row ")))
    columns = lines[header].split()
    for row in ("floor", "lora", "loca"):
        fields = next(line for line in lines[header:] if line.split()[0] == row).split()
        number = {c: float(v) for c, v in zip(columns[2:], fields[2:])}
        assert fields[1] == "eager"
        parts = [number[profile_step.HEADERS[c]] for c in profile_step.CATEGORIES]
        assert sum(parts) == pytest.approx(number["busy"], abs=0.004)
        assert number["gaps"] == pytest.approx(number["wall"] - number["busy"], abs=0.002)
        assert number["busy"] > 0 and number["kernels"] > 0 and number["matmul"] > 0
        assert (tmp_path / f"t.{row}.json").exists()
    report = json.loads((tmp_path / "p.json").read_text())
    assert [r["row"] for r in report["rows"]] == [r["row"] for r in results] == ["floor", "lora", "loca"]
    for r in report["rows"]:
        assert sum(r[c] for c in profile_step.CATEGORIES) == pytest.approx(r["busy_ms"])
        assert r["busy_ms"] <= r["summed_ms"] + 1e-9 and r["optimizer"] > 0  # AdamW's ops are the optimizer's


def test_profile_step_refuses_cuda_graphs_on_the_cpu_in_one_line(capsys):
    assert profile_step.cli(["--device", "cpu", "--mode", "graph"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("profile_step.py: error: --mode graph")


# -----------------------------------------------------------------------------
# scripts/peft_bench.py: our step against transformers + PEFT, each row in its own process

_spec = importlib.util.spec_from_file_location("peft_bench", Path(bench.__file__).parent / "scripts" / "peft_bench.py")
peft_bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(peft_bench)
# The smoke test its docstring gives (the flags after "peft_bench.py" on the line marked "# smoke").
PEFT_SMOKE = shlex.split(next(line for line in peft_bench.__doc__.splitlines() if line.rstrip().endswith("# smoke"))
                         .split("peft_bench.py", 1)[1].split("#")[0])


def test_peft_bench_has_three_rows_for_each_method_with_a_peft_form_and_keeps_the_old_names():
    shared = [m for m in spectral_ft.METHODS if spectral_ft.declared(m, "peft")]
    assert list(peft_bench.SHARED) == shared and {"lora", "vera", "fourierft", "dora", "oft"} <= set(shared)
    for method in spectral_ft.METHODS:
        rows = {f"peft-{method}-ro", f"peft-{method}-eager", f"ours-{method}"}
        assert rows <= set(peft_bench.ROWS) if method in shared else not rows & set(peft_bench.ROWS)
    old = ("peft-lora-ro", "peft-floor-ro", "peft-lora-eager", "ours-lora", "ours-floor", "ours-lora-model",
           "ours-floor-model")
    assert set(old) <= set(peft_bench.ROWS)


def test_a_row_s_process_gets_the_same_flags_but_its_row():
    args = peft_bench.parse_args(PEFT_SMOKE + ["--rows", "ours-lora,peft-vera-ro", "--batches", "4,8", "--lr", "1e-3",
                                              "--json", "out.json"])
    argv = peft_bench.command(args, rows=["peft-vera-ro"], batches=[8], json="row.json", same_process=True)
    assert argv[0] == sys.executable and argv[1].endswith("peft_bench.py")
    assert vars(peft_bench.parse_args(argv[2:])) == dict(vars(args), rows=["peft-vera-ro"], batches=[8],
                                                         json="row.json", same_process=True)


def test_peft_bench_without_peft_runs_our_rows_each_in_its_own_process(tmp_path, capsys):
    """The smoke test where transformers or peft is missing: one line says so, the PEFT rows are skipped, ours run,
    each in a process of its own (not this one), and the table shows them with PEFT's columns empty."""
    if importlib.util.find_spec("peft") and importlib.util.find_spec("transformers"):
        pytest.skip("peft is installed: this test is about its absence")
    out = tmp_path / "peft.json"  # the table in a Python of its own: it forks, and pytest's process has computed
    table = subprocess.Popen([sys.executable, peft_bench.__file__, *PEFT_SMOKE, "--rows", "ours-lora-none,peft-lora-ro,"
                              "ours-floor", "--json", str(out)], stdout=subprocess.PIPE, text=True)
    printed = table.communicate(timeout=240)[0]
    assert table.returncode == 0, printed
    report = json.loads(out.read_text())
    assert report["device"] == "CPU"
    assert "is not installed (the PEFT rows need transformers and peft): skipping them" in printed
    assert [r["row"] for r in report["bench"]] == ["ours-lora-none", "ours-floor"]
    assert all(r["ms"] > 0 and r["loop_ms"] > 0 and r["mode"] == "padded" and r["device"] == "CPU"
               for r in report["bench"])
    processes = {r["process"] for r in report["bench"]}
    assert len(processes) == 2 and table.pid not in processes
    for r in report["bench"]:  # where each process's time went: start (from the fork), setup, model, steps; its exit
        stages = [r["start_s"], r["setup_s"], r["build_s"], r["timing_s"]]
        assert min(stages) >= 0 and r["timing_s"] >= r["first_step_s"] - 0.01 and sum(stages) <= r["process_s"] + 0.2
    lora = next(line for line in printed.splitlines() if line.startswith("lora none "))
    assert float(lora.split()[3]) > 0 and lora.split()[4:] == ["-"] * 5  # peft-ro, peft-eager, the ratios: not run


def test_a_row_whose_process_dies_shows_failed_with_the_first_line_of_its_error_and_the_others_run(
        tmp_path, monkeypatch, capsys):
    """Each row's process stood in for by a function of its flags: one dies of an error of two lines, the rows
    after it still run, and the table says 'failed' with the error's first line."""
    def fake(flags):
        args = peft_bench.parse_args(flags)
        if args.rows == ["ours-dora-none"]:
            raise RuntimeError("CUDA error: out of memory\nsecond line")
        reported(args, ms={"ours-lora-none": 2.0}.get(args.rows[0], 3.0),
                 loop_ms={"ours-lora-none": 1.0}.get(args.rows[0], 2.5))
        return 0

    monkeypatch.setattr(peft_bench, "row_main", fake)
    stand_in = lambda name: types.SimpleNamespace(__name__=name, __version__="0")  # no module is imported
    monkeypatch.setattr(peft_bench, "hf_libraries", lambda: (stand_in("transformers"), stand_in("peft")))
    report = peft_bench.run(peft_bench.parse_args(["--device", "cpu", "--batches", "4", "--rows",
                                                   "peft-lora-ro,ours-lora-none,ours-dora-none,peft-dora-ro"]))
    assert [r["row"] for r in report["bench"]] == ["peft-lora-ro", "ours-lora-none", "ours-dora-none", "peft-dora-ro"]
    assert report["bench"][2]["error"] == "exit status 1: RuntimeError: CUDA error: out of memory"
    printed = capsys.readouterr().out
    assert "ours-dora-none failed: exit status 1: RuntimeError: CUDA error: out of memory" in printed
    lines = {line.split()[0]: line.split() for line in printed.splitlines()[-6:] if line.split()}
    assert lines["lora"][1] == "none" and lines["lora"][3:9] == ["2.000", "3.000", "-", "1.500", "-", "2.500"]
    assert lines["lora"][-1] == "yes" and lines["dora"][3:5] == ["failed", "3.000"]
    assert report["peft_ro_over_ours"] == {4: {"lora": 1.5, "dora": None}}


row_times = st.fixed_dictionaries(dict(first_step_s=st.floats(0.0, 100.0), ms=st.floats(0.5, 100.0)))


@settings(max_examples=200, deadline=None)
@given(ro=row_times, short=row_times, long=row_times, layers_from=st.integers(2, 50))
def test_worst_run_is_the_least_wall_clock_ratio_over_every_run_length(ro, short, long, layers_from):
    """A run of N steps on the fixed shape: its first step, then N - 1 median steps, under train.py's default (the
    short rows below `layers_from` steps, the long rows from there). worst_run's ratio is PEFT-RO's wall clock over
    ours at no run length above it, and is reached at the length it names (or, endless, the steps' ratio)."""
    worst = peft_bench.worst_run(ro, short, long, layers_from)
    wall = lambda r, n: r["first_step_s"] + (n - 1) * r["ms"] / 1e3
    ours = lambda n: wall(short if n < layers_from else long, n)
    ratio = lambda n: wall(ro, n) / ours(n) if ours(n) else math.inf
    assert all(worst["ratio"] <= ratio(n) * (1 + 1e-12) for n in [*range(1, 3 * layers_from), 10**6, 10**12])
    assert worst["ratio"] == (ro["ms"] / long["ms"] if worst["steps"] is None else ratio(worst["steps"]))
    assert peft_bench.worst_run(None, short, long) is None and peft_bench.worst_run(ro, {"error": "x"}, long) is None


def test_the_table_says_whether_a_run_of_any_length_ends_sooner_than_under_peft_reduce_overhead(capsys):
    """The verdict over run lengths reads train.py's default rows: 'none' below LAYERS_FROM_STEPS, 'layers' from
    there, and names each method's least ratio and where it falls."""
    row = lambda name, first, ms: dict(row=name, batch=8, first_step_s=first, ms=ms, loop_ms=ms)
    rows = [row("peft-lora-ro", 40.0, 9.0), row("ours-lora-none", 0.5, 8.0), row("ours-lora-layers", 10.0, 7.5),
            row("peft-vera-ro", 40.0, 9.0), row("ours-vera-none", 0.5, 10.0), row("ours-vera-layers", 10.0, 8.5)]
    short, long, any_run = peft_bench.bench_table(rows)
    assert short[8]["vera"] < 1 and any_run[8]["lora"] == dict(ratio=1.2, steps=None)
    assert any_run[8]["vera"]["steps"] is None and any_run[8]["vera"]["ratio"] == pytest.approx(9.0 / 8.5)
    last = capsys.readouterr().out.splitlines()[-1]
    assert last.startswith("batch 8: a run of any length") and ": NO (vera 1.059x); the least over run" in last
    assert last.endswith("lora 1.200x endless, vera 1.059x endless")


def test_table_prints_a_written_file_s_tables_again_and_a_file_it_did_not_write_is_one_line(tmp_path, capsys):
    """--table FILE runs nothing (no GPU needed): it prints the file's bench and real-run tables with today's
    verdicts; a file that is not such a report gets one line naming it, exit status 2."""
    row = lambda name, first, ms: dict(row=name, batch=8, first_step_s=first, ms=ms, loop_ms=ms)
    report = dict(versions={"torch": "0"}, device="GPU", epoch=[], bench=[
        row("peft-lora-ro", 40.0, 9.0), row("ours-lora-none", 1.0, 7.0), row("ours-lora-layers", 1.0, 6.0)])
    (tmp_path / "out.json").write_text(json.dumps(report))
    assert peft_bench.cli(["--table", str(tmp_path / "out.json")]) == 0
    printed = capsys.readouterr().out
    assert "lora none" in printed and "lora layers" in printed and "lora 1.500x endless" in printed
    (tmp_path / "bad.json").write_text(json.dumps(dict(report, bench=[{"ms": 1.0}])))
    for bad in ("bad.json", "missing.json"):
        assert peft_bench.cli(["--table", str(tmp_path / bad)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"peft_bench.py: error: --table: {tmp_path / bad} is not a JSON file")
        assert err.count("\n") == 1


def test_peft_s_adapter_trains_the_same_tensors_as_ours_for_every_shared_method():
    """The rows compare like with like: PEFT's config, read from our class's declarations (peft_bench.peft_config),
    gives on the smoke test's model the tensors export.py writes for ours (names and shapes, the head included) and
    as many trainable parameters."""
    peft = pytest.importorskip("peft")
    transformers = pytest.importorskip("transformers")
    args = peft_bench.parse_args(PEFT_SMOKE)
    cpu = torch.device("cpu")
    for method in peft_bench.SHARED:
        ours = bench.build(args, method, cpu)
        theirs = peft_bench.hf_bench_model((transformers, peft), args, method, cpu)
        trainable = lambda model: sum(p.numel() for p in model.parameters() if p.requires_grad)
        in_head = set(ours.head_parameter_names())
        adapter = sum(p.numel() for n, p in ours.named_parameters() if p.requires_grad and n not in in_head)
        their_adapter = sum(p.numel() for n, p in theirs.named_parameters()
                            if p.requires_grad and "modules_to_save" not in n)
        assert adapter == their_adapter > 0 and trainable(ours) == trainable(theirs), method
        shapes = lambda tensors: {key: tuple(t.shape) for key, t in tensors.items()}
        assert shapes(peft.get_peft_model_state_dict(theirs)) == shapes(export.peft_tensors(ours, method)), method


def test_launch_ms_is_the_host_s_wait_before_a_step_s_first_graph_launch_and_none_without_graphs(monkeypatch):
    """cvr.launch_ms stamps CUDAGraph.replay (ours and torch.compile's cudagraph trees both launch through it): a step
    that works 30 ms on the host and then replays twice waits ~30 ms; one that replays nothing gives None; the CPU
    gives None; replay is torch's own again afterwards. The device is stood in for (no GPU here)."""
    import time
    cvr = peft_bench.cvr
    monkeypatch.setattr(cvr, "synchronize", lambda device: None)
    monkeypatch.setattr(torch.cuda.CUDAGraph, "replay", lambda graph: None)  # stands in for torch's
    stand_in = torch.cuda.CUDAGraph.replay

    def step(i):
        time.sleep(0.03)
        torch.cuda.CUDAGraph.replay(object())
        time.sleep(0.05)  # after the launch: not counted
        torch.cuda.CUDAGraph.replay(object())

    waited = cvr.launch_ms(step, 3, torch.device("cuda"))
    assert 30 <= waited < 75  # the 50 ms after the first launch are not in it
    assert torch.cuda.CUDAGraph.replay is stand_in
    assert cvr.launch_ms(lambda i: time.sleep(0.001), 2, torch.device("cuda")) is None
    assert cvr.launch_ms(step, 2, torch.device("cpu")) is None


def test_a_row_past_its_timeout_is_stopped_with_its_workers_and_the_rows_after_it_run(tmp_path, monkeypatch, capsys):
    """--row-timeout: a row whose process (standing in: a function that starts a child, as Inductor's compile
    workers, and sleeps) outlives it is stopped, child and all, and reported so; the next row runs."""
    pid_file = tmp_path / "child.pid"

    def fake(flags):
        args = peft_bench.parse_args(flags)
        if args.rows == ["peft-oft-ro"]:
            sleep_with_a_child(pid_file)
        reported(args, ms=2.0, loop_ms=1.5)
        return 0

    monkeypatch.setattr(peft_bench, "row_main", fake)
    stand_in = lambda name: types.SimpleNamespace(__name__=name, __version__="0")
    monkeypatch.setattr(peft_bench, "hf_libraries", lambda: (stand_in("transformers"), stand_in("peft")))
    t0 = time.perf_counter()
    report = peft_bench.run(peft_bench.parse_args(["--device", "cpu", "--batches", "4", "--row-timeout", "3",
                                                   "--rows", "peft-oft-ro,ours-oft"]))
    assert time.perf_counter() - t0 < 30  # not the 60 s the child sleeps, holding the row's output open
    stopped, ours = report["bench"]
    assert stopped == dict(row="peft-oft-ro", batch=4, error="stopped: still running after 3 s", process_s=3.0)
    assert ours["ms"] == 2.0 and 0 <= ours["process_s"] < 30
    assert gone(int(pid_file.read_text())), "the row's child process outlived the timeout"
    assert "peft-oft-ro batch 4: FAILED (stopped: still running after 3 s)" in capsys.readouterr().out


def reported(args, **numbers):
    """A row's process standing in: the report of its one bench row, `numbers` its times."""
    row = dict(row=args.rows[0], batch=args.batches[0], first_step_s=0.0, loss=0.7, mode="graph", device="GPU",
               process=os.getpid(), **numbers)
    Path(args.json).write_text(json.dumps(dict(bench=[row])))


def sleep_with_a_child(pid_file):
    """A row's process standing in: start a child (as Inductor's compile workers), write its pid to `pid_file`, and
    both sleep 60 s."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    pid_file.write_text(str(child.pid))
    time.sleep(60)


def gone(pid, seconds=5.0):
    """Whether process `pid` ends within `seconds` (a killed orphan lingers as a zombie until init reaps it)."""
    for _ in range(int(seconds / 0.1)):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        stat = Path(f"/proc/{pid}/stat")
        if not stat.exists() or stat.read_text().split()[2] in "ZX":
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("interrupt", ["ctrl-c", "sigterm"])
def test_an_interrupted_table_stops_the_row_s_process_and_its_children(tmp_path, monkeypatch, interrupt):
    """Ctrl-C and SIGTERM (`timeout`) reach only the table's own process (each row's process has a process group of
    its own): the second row's process and what it started are stopped before the interrupt goes on, not left running
    for their 60 s; the table's SIGTERM handler is the previous one again afterwards; and the report saved so far
    keeps the first row and the device it named."""
    pid_file, when, out = tmp_path / "child.pid", {}, tmp_path / "table.json"
    wait = peft_bench.wait_for_row

    def interrupted(pid, timeout):  # the wait for the second row: the interrupt once the row's child is up
        if not when:
            when["first"] = wait(pid, timeout)
            return when["first"]
        for _ in range(100):
            if pid_file.exists() and pid_file.read_text():
                break
            time.sleep(0.1)
        when["interrupted"] = time.perf_counter()
        if interrupt == "ctrl-c":
            raise KeyboardInterrupt
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises at once

    def row(flags):
        args = peft_bench.parse_args(flags)
        if args.rows == ["ours-dora"]:
            sleep_with_a_child(pid_file)
        reported(args, ms=2.0, loop_ms=1.5)
        return 0

    monkeypatch.setattr(peft_bench, "wait_for_row", interrupted)
    monkeypatch.setattr(peft_bench, "row_main", row)
    handler = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt if interrupt == "ctrl-c" else SystemExit):
        peft_bench.run(peft_bench.parse_args(["--device", "cpu", "--batches", "4", "--rows", "ours-lora,ours-dora",
                                              "--json", str(out)]))
    assert time.perf_counter() - when["interrupted"] < 4 and gone(int(pid_file.read_text()))  # not the 5 s sleep
    assert signal.getsignal(signal.SIGTERM) is handler
    saved = json.loads(out.read_text())
    assert [r["row"] for r in saved["bench"]] == ["ours-lora"] and saved["device"] == "GPU"


def test_one_compile_worker_or_the_cpu_compiles_in_the_row_s_process(monkeypatch):
    """--compile-workers 1, or any number on the CPU (smoke tests, no Inductor): no pool starts; torch's default is
    given back for the real run's rows."""
    monkeypatch.setattr(peft_bench.cvr, "inductor_threads",
                        lambda threads, warm=False: pool.append((threads, warm)) or 8)  # torch's default: 8
    for workers, device in ((1, "cuda"), (0, "cpu"), (4, "cpu")):
        pool = []
        assert peft_bench.compile_workers(workers, torch.device(device)) == 8 and pool == [(1, False)]
    for workers, started in ((0, 8), (4, 4)):
        pool = []
        assert peft_bench.compile_workers(workers, torch.device("cuda")) == 8 and pool == [(1, False), (started, True)]


def test_a_row_that_compiles_nothing_starts_no_compile_workers(monkeypatch):
    """PEFT eager and our floor's default step go through no Inductor: their processes compile in-process (1, no
    pool to start); every other row gets --compile-workers."""
    assert {row for row in peft_bench.ROWS if not peft_bench.compiles(row)} == {
        *(f"peft-{m}-eager" for m in peft_bench.SHARED), "ours-floor"}
    asked = []
    monkeypatch.setattr(peft_bench, "compile_workers", lambda workers, device: asked.append(workers) or 1)
    for rows, workers in (("ours-floor", 1), ("ours-floor,ours-lora", 3), ("ours-floor-layers", 3)):
        asked.clear()
        peft_bench.run(peft_bench.parse_args(PEFT_SMOKE + ["--rows", rows, "--same-process", "--compile-workers", "3"]))
        assert asked == [workers]


def test_a_real_run_s_row_that_compiles_nothing_starts_no_compile_workers(monkeypatch, tmp_path):
    """The real run's rows start torch's compile pool before their timed epoch where they compile (PEFT-RO, ours
    adapters and layers), and not for PEFT eager and ours-none (CUDA graphs alone), as a user's run of them."""
    for name in ("train.tsv", "dev.tsv"):
        (tmp_path / name).write_text("sentence\tlabel\n")
    warmed = []
    monkeypatch.setattr(peft_bench.cvr, "inductor_threads", lambda threads, warm=False: warmed.append(warm) or 8)
    monkeypatch.setattr(peft_bench, "sst2", lambda args: (None, None, 0))
    monkeypatch.setattr(peft_bench.cvr, "epoch_row", lambda args, row, *rest: dict(variant=row))
    monkeypatch.setattr(peft_bench, "hf_epoch_row", lambda libraries, args, row, *rest: dict(variant=row))
    for row in peft_bench.EPOCH_ROWS:
        warmed.clear()
        args = peft_bench.parse_args(PEFT_SMOKE + ["--rows", "", "--minilm", str(tmp_path), "--sst2", str(tmp_path),
                                                   "--epoch-rows", row, "--same-process"])
        peft_bench.run_in_this_process(args, ("transformers", "peft"), dict(device=None, bench=[], epoch=[]))
        assert warmed == [False, row not in ("peft-eager", "ours-none")], row


def test_a_process_of_our_rows_alone_does_not_import_the_peers(monkeypatch, capsys):
    """A row's process for ours starts without importing transformers and peft (seconds per row on a full table)."""
    def refuse():
        raise AssertionError("hf_libraries called for our rows alone")
    monkeypatch.setattr(peft_bench, "hf_libraries", refuse)
    report = peft_bench.run(peft_bench.parse_args(PEFT_SMOKE + ["--rows", "ours-floor", "--same-process"]))
    assert [r["row"] for r in report["bench"]] == ["ours-floor"] and report["versions"] == {"torch": torch.__version__}


def test_the_real_run_s_folders_are_checked_before_anything_runs(tmp_path, capsys):
    """--sst2 without GLUE SST-2's files is one line and exit status 2 (the table tokenizes it before its rows)."""
    (tmp_path / "train.tsv").write_text("sentence\tlabel\n")
    assert peft_bench.cli(PEFT_SMOKE + ["--minilm", str(tmp_path), "--sst2", str(tmp_path), "--rows", ""]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"peft_bench.py: error: --sst2 {tmp_path}: lacks dev.tsv (GLUE SST-2's train.tsv and dev.tsv)"


def test_the_real_run_s_rows_each_run_an_epoch_in_a_process_forked_after_the_table_tokenized(kit, tmp_path):
    """The real run's rows of ours on the kit's tiny BERT and an SST-2-format folder over its words, the table in a
    Python of its own (it tokenizes SST-2, then forks): each row an epoch in its own process, with its wall
    time, loss and dev accuracy; `ours-none` (graphs alone: nothing compiled) beside the default."""
    sst2 = tmp_path / "sst2"
    sst2.mkdir()
    for name, n in (("train.tsv", 48), ("dev.tsv", 12)):
        lines = [f"{WORDS[i % 12]} {WORDS[(i * 5) % 12]} {'yes' if i % 2 else 'no'}\t{i % 2}" for i in range(n)]
        (sst2 / name).write_text("sentence\tlabel\n" + "\n".join(lines) + "\n")
    out = tmp_path / "epoch.json"
    table = subprocess.run([sys.executable, peft_bench.__file__, "--device", "cpu", "--minilm", str(kit["model"]),
                            "--sst2", str(sst2), "--rows", "", "--epoch-rows", "ours,ours-none", "--batch", "8",
                            "--max-length", "16", "--json", str(out)], capture_output=True, text=True, timeout=240)
    assert table.returncode == 0, table.stderr[-2000:]
    epoch = json.loads(out.read_text())["epoch"]
    assert [r["variant"] for r in epoch] == ["ours", "ours-none"]
    for r in epoch:
        assert r["steps"] == 6 and r["wall_s"] > 0 and math.isfinite(r["loss_last100"]) and r["mode"] == "padded"
        assert 0 <= r["dev_accuracy"] <= 1 and r["start_s"] < r["process_s"]
    assert len({r["process"] for r in epoch}) == 2
    assert "ours-none" in table.stdout.split("# real run")[1]
