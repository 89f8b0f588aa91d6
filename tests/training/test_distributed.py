"""Training commands under ``accelerate launch`` with two CPU processes (torchrun + gloo): both ranks really train
as one data-parallel job (the model is DDP-wrapped, each rank sees different batches), they end with identical
weights, and rank 0's saved checkpoint holds exactly those weights. train-rm, train-dpo and train-rm-multihead;
train-online-dpo refuses to run in several processes.

``accelerate launch --cpu --num_processes 2`` is not used: without mpirun it silently starts ONE process.
``--multi_gpu`` starts the processes with torchrun; the trainers then ask accelerate for CPU + gloo themselves.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml
from pairfiles import published

REPO = Path(__file__).resolve().parents[2]


def launch(command: list[str], reports: Path, timeout: int = 240) -> subprocess.CompletedProcess:
    """``accelerate launch --multi_gpu --num_processes 2`` (torchrun; the trainers then ask for CPU + gloo)."""
    env = {**os.environ, "PSYCHOCOUNSEL_RANK_REPORT": str(reports), "OMP_NUM_THREADS": "1",
           "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", "0",  # a free port: other test runs may hold 29500
           "-m", "psychocounsel.cli", *command]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def rank_reports(reports: Path, steps: int, rows: int) -> dict[int, dict]:
    """The two ranks' reports, checked: both ran, DDP-wrapped, ``steps`` batches of ``rows`` rows each,
    different batches, the same weights."""
    ranks = {int(p.stem.split("-")[1]): json.loads(p.read_text()) for p in reports.glob("rank-*.json")}
    assert sorted(ranks) == [0, 1]
    for r, rep in ranks.items():
        assert (rep["env_rank"], rep["world_size"]) == (r, 2)
        assert rep["distributed_type"].endswith("MULTI_CPU") and rep["parallel_mode"].endswith("DISTRIBUTED")
        assert rep["wrapped"] == "DistributedDataParallel"
        assert rep["global_step"] == steps and len(rep["batches"]) == steps
        assert all(b[0] == rows for b in rep["batches"]), rep["batches"]
    # Data parallel, not two copies of one run: the ranks saw different batches yet hold the same weights,
    # which only gradient averaging can give.
    assert ranks[0]["batches"] != ranks[1]["batches"]
    assert ranks[0]["weights_sha256"] == ranks[1]["weights_sha256"]
    return ranks


def test_two_cpu_ranks_train_one_model(tmp_path, tiny_model_dir):
    data = tmp_path / "pairs"
    published(data, 16, "train")
    published(data, 4, "dev")
    out, reports = tmp_path / "rm", tmp_path / "ranks"
    conf = tmp_path / "rm.yaml"
    conf.write_text(yaml.safe_dump({
        "model": str(tiny_model_dir), "train_pairs": str(data), "output_dir": str(out), "max_length": 64,
        # global batch 4 = 2 pairs per process x 2 processes: no accumulation, so 3 steps = 3 batches per rank
        "batch_size": 4, "per_device_batch_size": 2, "max_steps": 3, "learning_rate": 1e-3,
        "warmup_ratio": 0.0, "logging_steps": 1, "save_steps": 3, "progress": False,
        "eval_splits": ["dev"], "bf16_mixed": False,
    }))
    res = launch(["train-rm", str(conf)], reports)
    assert res.returncode == 0, res.stderr[-3000:]  # includes SIGABRT at exit (gloo without teardown)
    # 2 pairs per process and step, packed one row per pair (the shared speech runs once)
    ranks = rank_reports(reports, steps=3, rows=2)

    from psychocounsel.training.distributed import weights_digest
    from psychocounsel.training.scoring import RewardScorer

    assert weights_digest(RewardScorer(out, dtype="float32").model) == ranks[0]["weights_sha256"]

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["batch"] == {"global": 4, "per_device": 2, "processes": 2, "accumulation": 1}
    assert manifest["metrics"]["steps"] == 3 and manifest["metrics"]["eval"]["dev"]["pairs"] == 4
    assert (out / "checkpoint-3" / "trainer_state.json").is_file()
    assert res.stdout.count("train loss") == 1  # one summary line: only rank 0 reports


def test_two_cpu_ranks_train_one_dpo_policy(tmp_path, tiny_model_dir):
    from pairfiles import write_pairs

    from psychocounsel.training.distributed import weights_digest

    data = write_pairs(tmp_path / "data" / "train.jsonl", n=12)
    out, reports = tmp_path / "dpo", tmp_path / "ranks"
    res = launch(["train-dpo", str(data), "--out", str(out),
                  # global batch 4 = 2 pairs per process x 2 processes, no accumulation: 2 steps = 2 batches a rank
                  "-o", f"model={tiny_model_dir}", "-o", "batch_size=4", "-o", "per_device_batch_size=2",
                  "-o", "max_steps=2", "-o", "max_length=128", "-o", "learning_rate=1e-3", "-o", "warmup=0",
                  "-o", "logging_steps=1", "-o", f"ref_cache_dir={tmp_path / 'ref_cache'}"], reports)
    assert res.returncode == 0, res.stderr[-3000:]
    ranks = rank_reports(reports, steps=2, rows=4)  # TRL's DPO runs chosen and rejected as 2 rows per pair

    from transformers import AutoModelForCausalLM

    assert weights_digest(AutoModelForCausalLM.from_pretrained(out)) == ranks[0]["weights_sha256"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["metrics"]["steps"] == 2 and manifest["metrics"]["processes"] == 2
    assert res.stdout.count("trained 2 steps") == 1  # only rank 0 reports


def test_two_cpu_ranks_train_one_multihead_model(tmp_path, tiny_model_dir):
    from psychocounsel.training.distributed import weights_digest
    from psychocounsel.training.multihead.model import MultiHeadRewardModel

    data = tmp_path / "pairs"
    published(data, 16, "train")
    out, reports = tmp_path / "rm7", tmp_path / "ranks"
    # batch_size is per process here: 2 pairs x 2 processes per step, 2 steps = 2 batches a rank
    res = launch(["train-rm-multihead", str(data), "--out", str(out), "-o", f"model={tiny_model_dir}",
                  "-o", "batch_size=2", "-o", "max_steps=2", "-o", "max_length=64", "-o", "lr=1e-3",
                  "-o", "warmup_ratio=0", "-o", "logging_steps=1", "-o", "eval_split=null"], reports)
    assert res.returncode == 0, res.stderr[-3000:]
    ranks = rank_reports(reports, steps=2, rows=4)  # chosen and rejected: 2 rows per pair
    assert weights_digest(MultiHeadRewardModel.from_pretrained(out)) == ranks[0]["weights_sha256"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["metrics"]["processes"] == 2 and manifest["metrics"]["global_batch"] == 4
    assert res.stdout.count("trained 7 heads") == 1  # only rank 0 reports
