"""Iterative online DPO (``psychocounsel train-online-dpo``): the paper's loop, written out here.

    psychocounsel train-online-dpo configs/train/online_dpo_cpu.yaml --out runs/online-dpo-cpu
    psychocounsel train-online-dpo configs/train/online_dpo_paper.yaml -o model=meta-llama/Llama-3.1-8B-Instruct \\
        -o reward_model=runs/rm-8b --out runs/online-dpo-8b

Each round r: draw ``speeches_per_round`` train speeches (seeded by r), sample ``samples_per_speech`` responses
to each from the CURRENT policy, score them with the reward model, keep (best, worst) per speech as a
preference pair (skipped, and counted, when their reward gap is below ``min_gap``), take one DPO pass over
those pairs with TRL's ``DPOTrainer``, then score the new policy's greedy replies to ``dev_speeches`` dev
speeches. The checkpoint with the best dev reward (the initial policy included) is the run's result. The paper
shows this beats offline DPO on the same reward model (its Figure 4).

Why our own loop and not ``trl.experimental``'s online trainers: those are experimental (their API moves between
releases), generate inside the training step (no vLLM server of the user's choice, no resume per round) and do
not keep a best checkpoint by dev reward.

Resuming: ``state.json`` in ``--out`` lists finished rounds (metrics, checkpoint, dev reward) and the best one.
Rerunning the same command continues at the first unfinished round; a round cut off midway is redone from its
start (its sampled pairs are a pure function of the policy and the round's seeds). Raising ``rounds`` on a
finished run continues it. Changing anything else that shapes training is refused.

One process only: under ``accelerate launch`` / torchrun (more than one process) the command stops with an
error. Only the DPO step of a round could be spread over processes; sampling (the bulk of a round) belongs on
a vLLM server, which shards the policy over GPUs itself.

Generation: ``backend: local`` runs psychocounsel's micro-batched transformers backend on the current policy's
checkpoint folder. ``backend: openai`` sends the requests to an OpenAI-compatible server (vLLM, SGLang) that
must serve the current policy under ``served_model``: at the start the initial ``model``, then each round's
new checkpoint. ``reload_command`` (run after every round with ``{checkpoint}`` filled in) is where that
happens, e.g. a script that restarts ``vllm serve {checkpoint} --served-model-name policy`` and waits for
``/v1/models``; without one, the loop pauses and asks you to reload the server by hand (vLLM >= 0.8 also
offers ``/v1/load_lora_adapter`` for LoRA policies, with ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``).

Layout: ``config`` (the config, the fields a resumed run may change), ``sampling`` (speech draws, sampling
through a backend, scoring, best/worst pairs, the best round), ``recipe`` (the DPO step of a round, the loop
with its resume state, and the ``train-online-dpo`` command).
"""
