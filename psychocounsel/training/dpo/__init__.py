"""Offline DPO (``psychocounsel train-dpo``): TRL's ``DPOTrainer`` behind one thin subclass.

    psychocounsel train-dpo runs/demo/pairs --config configs/train/dpo_cpu.yaml --out runs/dpo-cpu
    psychocounsel train-dpo train-00000-of-00001.parquet --config configs/train/dpo_paper.yaml \\
        -o model=meta-llama/Llama-3.1-8B-Instruct --out runs/dpo-8b

The paper trains offline DPO with beta 0.1 on its preference pairs; everything else (loss, batching,
checkpoints, distributed training) is TRL's. What this recipe adds:

- **Reference log-probs cached on disk.** The reference model is frozen, so its log-probs of every
  (prompt, chosen) and (prompt, rejected) are a pure function of the reference weights, the tokenized
  data, ``max_length``/truncation and the numerics (dtype, device, library versions). TRL's
  ``precompute_ref_log_probs`` computes them once per run; ``reference: cached`` also stores them in
  ``ref_cache_dir`` under a hash of all of those, so a second run (another beta, lr, batch or seed)
  skips the reference pass. The key hashes the reference weights themselves (TRL's ``hash_module``)
  and the token ids themselves (which covers the pair files, chat template and tokenizer), so a stale
  entry cannot be found: anything that changes the numbers changes the key.
- **Over-long pairs counted** (``max_length``): truncated (TRL's default), dropped, or an error;
  pairs whose prompt alone fills ``max_length`` carry no signal and TRL drops them: counted too.
- **Length-grouped batches** (``group_by_length``, ``LengthGroupedBatches``): less padding per step.
  bench/bench_train.py: cached reference + grouping train 1.62x the tokens/s of plain TRL on a CPU.
- A resolved config, data hash, library versions and TRL's metrics in ``manifest.json``.

Under ``accelerate launch`` (DDP over several processes) ``batch_size`` stays global, every process trains on
its share of the batches, and rank 0 alone writes the policy, ``manifest.json`` and the console report
(``tests/training/test_distributed.py`` checks two CPU processes end with the weights rank 0 saved).

Layout: ``config`` (the config, the fields a resumed run may change), ``trainer`` (the ``DPOTrainer`` subclass
and the reference-cache helpers), ``recipe`` (the run, ``train_dpo``, and the ``train-dpo`` command).

Output: a standard HF checkpoint in ``--out``. With ``lora`` the adapters are merged into it (``training.lora``)
unless ``lora.merge: false``, which saves the PEFT adapter alone (``adapter_config.json`` +
``adapter_model.safetensors``; load it onto the base model).
"""
