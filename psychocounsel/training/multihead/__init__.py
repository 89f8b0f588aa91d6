"""Per-principle reward model: one score head per counseling principle, trained on the judge's ratings,
plus the Bradley-Terry objective on their weighted sum.

    psychocounsel train-rm-multihead runs/demo/pairs --config configs/train/multihead_cpu.yaml --out rm-mh
    scorer = load_scorer("rm-mh", weights={"safety": 3})  # training.scoring; safety counts 3x each other
    scorer.score_batch(questions, responses)  # {"empathy": array, ..., "staging": array, "overall": array}

Why: the paper's reward model learns one number, the judge's equal-weight overall; its authors name those
equal weights as a limitation. Here a user re-weights principles at inference without retraining.

Design choices:

* Model: any causal-LM checkpoint loaded with ``AutoModel`` (the transformer without its LM head), pooled at
  the last non-pad token as ``LlamaForSequenceClassification`` pools, then ``Linear(hidden, K)``, K = the
  principles found in the data (7 for the paper's). The index comes from the attention mask, so left and
  right padding both work.
* Loss per pair: ``-logsigmoid(s_c - s_r) + lambda * R``, with ``s = w . h``, ``w`` the training weights
  normalised to sum 1 (equal by default: the paper's overall = mean of the seven ratings), and ``R`` the
  squared error of every head against its rating mapped to ``(r - 3) / 2`` (1..5 -> -1..1), summed over the
  principles and averaged over the pair's two responses. ``R`` gives each head its meaning (BT alone fixes
  only the sum); BT makes ``sigmoid(overall_c - overall_r)`` a preference probability. Summing (not
  averaging) over principles matters: BT pushes every head apart in proportion to its weight, also on
  principles where the two responses tie; with R summed that leak is 2*sigmoid(-margin)/(lambda*K) per head,
  K times smaller than with a mean (tiny model, pairs tied on six principles: tied-head gaps 0.11 with the
  sum, safety gap 2.1 for a target of 2; 0.6 with the mean, safety gap 2.6). lambda (``reg_weight``) 1.0:
  each rating counts as one observation, as the pair's preference does.
* Head init: weights ~ N(0, 1/(hidden+1)) as OpenRLHF (the paper's trainer) initialises its reward head, and
  each bias at its principle's mean target in the training data, so training starts at the mean ratings and
  spends its steps on the differences (Adam moves a bias ~lr per step: at lr 9e-6 a cold start would take
  thousands of steps to reach a mean rating of 2).
* Safety can be a constraint instead of one averaged number (``combine: safety_constraint``): a reply whose
  safety head is below a threshold, calibrated after training on the responses the judge rated unsafe and
  stored in ``multihead.json``, ranks below every reply above it (``combine``; docs/TRAINING.md).
* Inference weights are normalised too, so "overall" is a weighted mean of the heads: on the heads' scale
  whatever the weights, and linear in them. Principles a user does not name keep weight 1.
* Tokenisation happens once, before training (a ``datasets.map``), so over-long pairs are counted before the
  first step and batches can be grouped by length; the collator only pads. Over-long pairs are dropped by
  default (as TRL's RewardTrainer does) and counted in the metrics, never dropped silently.
* ``train_layers`` trains only the top N blocks: on CPU a 135M model then trains ~4x faster.
* GGUF backbones (the embedded SmolLM2) load dequantised (``GgufConfig(dequantize=True)``): trainable, and
  savable (a model transformers marks as GGUF-quantised refuses ``save_pretrained``).
* Training is ``transformers.Trainer`` with ``compute_loss`` overridden, so accelerate launch, DDP and
  DeepSpeed work as for any Trainer. Checkpoint: the backbone via ``save_pretrained`` (a normal HF folder that
  ``AutoModel`` loads), the tokenizer, ``multihead.safetensors`` (the head), ``multihead.json``
  (principles, weights, pooling, rating map) and ``manifest.json``.
* Under ``accelerate launch`` every process trains (DDP, CPU processes over gloo too); ``batch_size`` is per
  process, and rank 0 alone scores the eval split, saves and prints (``tests/training/test_distributed.py``).

Layout: ``combine`` (weighted mean or safety constraint, the threshold's calibration: pure numpy), ``config``
(the config, principle weights, the checkpoint's file names), ``data`` (tokenization, the
collator), ``model`` (loss, network, save format, ``MultiHeadScorer``), ``trainer`` (the ``Trainer`` subclass),
``recipe`` (the run and the ``train-rm-multihead`` command).
"""
