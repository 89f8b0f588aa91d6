"""Bradley-Terry reward model: pair files -> a sequence-classification checkpoint, via TRL's ``RewardTrainer``.

    psychocounsel train-rm configs/train/rm_cpu.yaml -o train_pairs=runs/demo/pairs
    accelerate launch --num_processes 8 -m psychocounsel.cli train-rm configs/train/rm_paper.yaml

The loss is TRL's: ``-logsigmoid(r_chosen - r_rejected [- margin])`` plus an optional centring term
``c * mean((r_chosen + r_rejected)^2)``. This recipe is the thin adapter around it; the choices it makes:

* **We tokenize, not TRL.** The chat (user = client speech, assistant = response; the paper's reward-model
  input) goes through the tokenizer's chat template exactly as TRL would (``apply_chat_template(prompt +
  completion, tokenize=True)``), but here, so that pairs longer than ``max_length`` are counted and reported.
  TRL drops them silently; we hand it token ids it has nothing left to filter.
* **Over-long pairs** are truncated by default, as the paper's trainer (OpenRLHF) does: the first
  ``max_length - 1`` tokens plus the sequence's own last token, so the reward is still read at the
  end-of-turn position it is read at for short inputs. A pair whose prompt alone fills ``max_length``
  truncates to two identical sequences with no label left in them; those are dropped and counted apart.
  ``overlong: drop`` drops every over-long pair instead (TRL's behaviour). Either way the counts go to the
  console and the manifest, for train and for each eval split.
* **Batch size is global.** ``batch_size`` (the paper's 128) = ``per_device_batch_size`` x accumulation x
  processes, so one preset gives the paper's optimisation on 1 GPU or 8; an indivisible combination is an
  error, not a silently different batch.
* **Eval scores the checkpoint on disk**: after saving, the saved folder is reloaded and every held-out
  pair is scored (accuracy = share of pairs with ``score(chosen) > score(rejected)``; ties count wrong).
  The number describes exactly the artifact a user gets, whatever sharding training used.
* **LoRA** (PEFT, task SEQ_CLS: the score head trains fully) is merged before saving, so the output is
  always a plain checkpoint that ``AutoModelForSequenceClassification.from_pretrained`` loads.
* **Held-out rows never train.** Without ``train_split``, training takes the rows labelled ``train`` if
  there are any, else every row; eval rows from the same files are only rows training did not take.
* **Cheaper steps, the same loss** (``trainer``): length-grouped batches, and each pair packed into one
  row so the speech it shares runs once (``group_by_length``, ``share_prompt``). bench/bench_train.py: 2.4x the
  tokens/s of plain ``RewardTrainer`` on a CPU, per-step losses equal to 3e-7 on the same batches.

Layout: ``config`` (the config, the global batch's accumulation), ``data`` (pair files -> token ids, over-long
accounting, splits), ``trainer`` (the ``RewardTrainer`` subclass and what builds it), ``recipe`` (the run, the
held-out scoring of the saved checkpoint and the ``train-rm`` command). Held-out pairs are scored with
``training.scoring``'s ``RewardScorer``, the one ``eval-rm`` uses. Multi-process plumbing (CPU + gloo, teardown,
rank reports) is ``training.distributed``; LoRA settings are ``training.lora``.
"""
