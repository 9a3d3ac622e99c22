/* main.c - the `damo` command line: a thin layer over the public API (damo.h only), and the
 * top of cli/. It holds the command table: every command's options (checked and printed
 * from the same tables, so `damo CMD --help` lists exactly what CMD accepts) and, for the
 * commands that take a model, one handler per model kind. The kind of --model DIR or
 * --config FILE is read once here (cli_kind_of); a kind a command does not apply to gets a
 * plain message naming the command that does. Files below: the handlers (commands.c,
 * predict.c, gpt.c, gpt_eval.c, bert.c, summary.c, bench.c, tokenize.c), their shared
 * helpers (text.c), and args.c at the bottom. */
#include "cli.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

cli_kind cli_kind_of(const char *path) {
  if (!path) return CLI_KIND_UNKNOWN;
  char config[4096], type[16];
  struct stat sb;
  if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) snprintf(config, sizeof config, "%s/config.json", path);
  else snprintf(config, sizeof config, "%s", path);
  damo_status st = damo_config_model_type_file(config, type, sizeof type);
  if (st == DAMO_ERR_UNSUPPORTED) return CLI_KIND_UNSUPPORTED; /* a model_type damo has no kind for */
  if (st != DAMO_OK) return CLI_KIND_UNKNOWN; /* missing or not JSON: the handler says which */
  return !strcmp(type, "gpt2") ? CLI_GPT2 : !strcmp(type, "bert") ? CLI_BERT : CLI_SEQUENTIAL;
}

#define SEQ CLI_KIND_BIT(CLI_SEQUENTIAL)
#define GPT CLI_KIND_BIT(CLI_GPT2)
#define BRT CLI_KIND_BIT(CLI_BERT)
#define END {NULL, 0, NULL, NULL}

static const char spec_note[] =
    "SPEC: fashion-mnist | spam-assassin | FOLDER (sub-folders are the classes, files their texts) | file.csv\n"
    "      (label column 'label', or --label-column NAME) | x.npy,y.npy | x.npy,y1.npy,y2.npy (a model of\n"
    "      several outputs: one targets array per output, in the order of its \"outputs\")\n"
    "TEXT (GPT-2, BERT pre-training): moby-dick | sotu | a UTF-8 text file; BERT pre-training takes a comma\n"
    "      list of these and labelled text sets (their training split only)";

/* ---- train */
static const cli_option train_common[] = {
    {"--config", 1, "FILE", "the model: a Sequential config (\"layers\"), or a HuggingFace config.json with\n"
                            "model_type gpt2 or bert; its kind decides which options below apply"},
    {"--data", 1, "SPEC", "what to train on (SPEC, or TEXT for GPT-2 and BERT pre-training; below)"},
    {"--out", 1, "DIR", "where the model is saved (Sequential: default damo_model; others: required)"},
    {"--overwrite", 0, NULL, "replace a model or run already in --out (without it, or --resume, that is refused)"},
    {"--np", 1, "N", "data-parallel on N processes: starts `mpirun -np N` on this command (or run the\n"
                     "command under mpirun yourself; every rank takes its share of each batch)"},
    {"--bucket-mb", 1, "MB", "data-parallel gradient buckets of MB megabytes (default 25)"},
    {"--zero", 1, "0|1", "1: ZeRO stage 1, each rank keeps 1/N of the optimizer moments (default 0)"},
    {"--recompute", 0, NULL, "keep only each transformer block's input and output and run the block again in\n"
                             "backward: activation memory of one block, for about a third more step time"},
    {"--precision", 1, "f32|bf16", "bf16: mixed precision, every matmul (forward and backward) on bfloat16 operands\n"
                                   "with f32 accumulation; weights, optimizer state, norms, softmax and loss stay f32\n"
                                   "(damo info says whether this CPU runs bf16 natively or emulates it; default f32)"},
    END};
static const cli_option train_sequential[] = {
    {"--sync-batchnorm", 0, NULL, "data parallel: BatchNorm statistics of the whole batch, not each rank's"},
    {"--epochs", 1, "N", "passes over the training data (default: the config's \"fit\", else 10)"},
    {"--batch-size", 1, "B", "examples per step (default 32)"},
    {"--lr", 1, "X", "learning rate of the config's optimizer"},
    {"--seed", 1, "S", "initialisation and shuffling seed (default 42)"},
    {"--validation-split", 1, "F", "the last fraction F in [0, 0.99] of the training rows validates"},
    {"--patience", 1, "P", "stop after P epochs without a better validation loss; keep the best weights"},
    {"--verbose", 1, "0|1|2", "0 silent, 1 a progress bar, 2 a line per epoch (default: 1 on a terminal, else 2)"},
    {"--history", 1, "FILE", "the per-epoch CSV (default DIR/history.csv)"},
    {"--label-column", 1, "NAME", "a CSV's label column (default label)"},
    {"--no-augment", 0, NULL, "turn off the config's on-the-fly augmentation"},
    {"--checkpoint-every", 1, "N", "a checkpoint in --out every N steps as well as at each epoch end"},
    {"--resume", 0, NULL, "continue the run checkpointed in --out (same config, data and options)"},
    END};
static const cli_option train_private[] = {
    {"--dp-clip", 1, "C", "DP-SGD: clip each example's gradient to L2 norm C (turns differential privacy on;\n"
                          "with --dp-noise or --dp-epsilon; docs/privacy.md)"},
    {"--dp-noise", 1, "SIGMA", "DP-SGD: Gaussian noise of standard deviation SIGMA * C on the clipped sum"},
    {"--dp-epsilon", 1, "EPS", "DP-SGD: the smallest noise that spends at most EPS over the planned epochs"},
    {"--dp-delta", 1, "D", "DP-SGD: the delta of (epsilon, delta), below 1/N (default 1e-5)"},
    {"--dp-sampling", 1, "poisson|shuffle", "DP-SGD batches: each example with probability B/N (what the accountant\n"
                                            "assumes; default) or a shuffled order's fixed batches (reported as such)"},
    {"--dp-accountant", 1, "rdp|balle2020", "how RDP converts to epsilon: classic or Balle et al. 2020 (tighter;\n"
                                            "default rdp)"},
    {"--dp-physical-batch", 1, "P", "DP-SGD: at most P rows per pass; a larger sampled batch takes several (default:\n"
                                    "B and 4 standard deviations of a Poisson batch's size)"},
    {"--dp-sweep", 1, "E1,E2,...", "DP-SGD, Sequential configs: a model per target epsilon (increasing), each scored on\n"
                                   "the test split; nothing is saved"},
    {"--dp-curve", 1, "FILE.png", "--dp-sweep: test accuracy and loss against epsilon"},
    END};
static const cli_option train_gpt2[] = {
    {"--steps", 1, "N", "optimizer steps (the cosine schedule's length)"},
    {"--batch-size", 1, "B", "windows per micro-batch"},
    {"--seq-len", 1, "T", "tokens per window (at most n_positions)"},
    {"--grad-accum", 1, "K", "micro-batches per step"},
    {"--warmup-steps", 1, "W", "linear warm-up steps before the cosine decay"},
    {"--lr", 1, "X", "peak learning rate (the cosine floor keeps its ratio to it)"},
    {"--seed", 1, "S", "initialisation and window seed"},
    {"--eval-every", 1, "N", "validation loss every N steps (0: at the end only)"},
    {"--log-every", 1, "N", "a progress line every N steps"},
    {"--checkpoint-every", 1, "N", "a checkpoint in --out every N steps (0: at the end only)"},
    {"--init", 1, "DIR", "start from a saved GPT-2 directory (damo's or HuggingFace's; its config.json sets\n"
                         "the shape, the config file the training defaults)"},
    {"--vocab", 1, "DIR", "GPT-2's encoder.json and vocab.bpe (default: the installed ones)"},
    {"--resume", 0, NULL, "continue from the checkpoint in --out"},
    END};
static const cli_option train_bert[] = {
    {"--pretrain", 0, NULL, "masked-LM pre-training on TEXT (a comma list); without it, fine-tuning the\n"
                            "classifier on a labelled text set (spam-assassin or FOLDER)"},
    {"--init", 1, "DIR", "start from a pre-trained BERT directory (default: random initialisation)"},
    {"--steps", 1, "N", "pre-training steps"},
    {"--epochs", 1, "N", "fine-tuning epochs (the weights of the best validation F1 are kept)"},
    {"--batch-size", 1, "B", "sequences per step"},
    {"--seq-len", 1, "T", "tokens per sequence, [CLS] and [SEP] included"},
    {"--predictions", 1, "P", "pre-training: masked-LM slots per window"},
    {"--warmup-steps", 1, "W", "linear warm-up steps"},
    {"--head-tokens", 1, "H", "fine-tuning: a long text keeps its first H and last T - 2 - H tokens"},
    {"--lr", 1, "X", "peak learning rate"},
    {"--seed", 1, "S", "initialisation and shuffling seed"},
    {"--vocab", 1, "FILE", "WordPiece vocab.txt (default: bert-base-uncased's)"},
    {"--checkpoint-every", 1, "N", "a checkpoint in --out every N steps (default: pre-training at each validation,\n"
                                   "fine-tuning at each epoch end)"},
    {"--resume", 0, NULL, "continue the run checkpointed in --out (same config, data and options)"},
    END};
static const cli_option train_freeze[] = {
    {"--train-only", 1, "PATTERNS", "train only the tensors named like these comma-separated shell patterns\n"
                                    "(\"encoder.layer.3.*,pooler.*,classifier.*\"); the rest keep their values"},
    {"--freeze", 1, "PATTERNS", "keep these tensors as they are (\"embeddings.*\", \"wte.weight\"): no gradient,\n"
                                "no decay, no DP-SGD noise (after --train-only when both are given)"},
    END};
static const cli_group train_groups[] = {
    {NULL, CLI_ALL_KINDS, train_common},
    {"a Sequential config (a \"layers\" list; defaults from its \"fit\")", SEQ, train_sequential},
    {"a GPT-2 config (model_type gpt2; defaults from its \"train\")", GPT, train_gpt2},
    {"a BERT config (model_type bert; defaults from its \"pretrain\" and \"finetune\")", BRT, train_bert},
    {"training part of a GPT-2 or BERT model (tensor names as in model.safetensors)", GPT | BRT, train_freeze},
    {"differential privacy (a Sequential or GPT-2 config, or fine-tuning a BERT classifier)", SEQ | GPT | BRT, train_private},
    {NULL, 0, NULL}};

/* ---- evaluate */
static const cli_option evaluate_common[] = {
    {"--model", 1, "DIR", "a saved model directory"},
    {"--data", 1, "SPEC", "what to score on (SPEC, or TEXT for GPT-2; below)"},
    {"--precision", 1, "f32|bf16", "matmul operands in bfloat16 (as train --precision; default f32)"},
    END};
static const cli_option evaluate_sequential[] = {
    {"--batch-size", 1, "B", "examples per forward pass (default 256)"},
    {"--split", 1, "test|validation|train", "which split of a built-in or text set (default test)"},
    {"--label-column", 1, "NAME", "a CSV's label column (default label)"},
    {"--confusion-png", 1, "FILE", "where a classifier's confusion matrix goes (default DIR/confusion.png)"},
    END};
static const cli_option evaluate_gpt2[] = {
    {"--seq-len", 1, "T", "tokens per window (default: the model's context, n_positions)"},
    {"--windows", 1, "N", "score N evenly spaced windows (default: every window of the validation part)"},
    {"--batch-size", 1, "B", "windows per forward pass (default 4)"},
    {"--vocab", 1, "DIR", "GPT-2's encoder.json and vocab.bpe (default: the installed ones)"},
    END};
static const cli_option evaluate_bert[] = {
    {"--split", 1, "test|validation|train", "which split of the labelled text set (default test)"},
    {"--confusion-png", 1, "FILE", "where the confusion matrix goes (default DIR/confusion.png)"},
    END};
static const cli_group evaluate_groups[] = {
    {NULL, CLI_ALL_KINDS, evaluate_common},
    {"a Sequential model: loss, accuracy, per-class figures", SEQ, evaluate_sequential},
    {"a GPT-2 model: loss and perplexity on the validation part (the last 10% of the tokens)", GPT, evaluate_gpt2},
    {"a fine-tuned BERT model: loss, accuracy, per-class figures on a labelled text set", BRT, evaluate_bert},
    {NULL, 0, NULL}};

/* ---- predict */
static const cli_option predict_common[] = {
    {"--model", 1, "DIR", "a saved model directory"},
    {"--input", 1, "PATH", "x.npy, a CSV, an image or a folder of images; a.npy,b.npy for a model\n"
                           "of several inputs (in its order); a text model or BERT: an e-mail file or a folder of them"},
    {"--precision", 1, "f32|bf16", "matmul operands in bfloat16 (as train --precision; default f32)"},
    END};
static const cli_option predict_sequential[] = {
    {"--output", 1, "FILE.npy", "also write the probabilities (or outputs) there; a model of several\n"
                                "outputs writes FILE_<output>.npy for each"},
    {"--labels", 1, "y.npy", "integer labels of an x.npy input: prints the accuracy"},
    {"--batch-size", 1, "B", "examples per forward pass (default 256)"},
    {"--top", 1, "K", "classes printed per image (default 3)"},
    {"--invert", 1, "auto|no", "auto: a picture on a light background is inverted (default); no: never"},
    {"--label-column", 1, "NAME", "a CSV's label column (default label; a CSV without it is scored only)"},
    END};
static const cli_group predict_groups[] = {
    {NULL, SEQ | BRT, predict_common},
    {"a Sequential model", SEQ, predict_sequential},
    {NULL, 0, NULL}};

/* ---- summary, generate, export, tokenize, bench */
static const cli_option summary_options[] = {
    {"--model", 1, "DIR", "a saved model directory (any kind)"},
    {"--config", 1, "FILE", "a config (any kind): the model it describes, freshly initialised"},
    END};
static const cli_group summary_groups[] = {{NULL, CLI_ALL_KINDS, summary_options}, {NULL, 0, NULL}};

static const cli_option generate_options[] = {
    {"--model", 1, "DIR", "a GPT-2 directory (damo train's, or HuggingFace's)"},
    {"--prompt", 1, "TEXT", "the text to continue (empty: from <|endoftext|>)"},
    {"--max-new-tokens", 1, "N", "tokens to add (default 50; past the context the window slides)"},
    {"--temperature", 1, "T", "sampling temperature (default 1; 0: greedy)"},
    {"--top-k", 1, "K", "sample among the K most probable tokens (0: all)"},
    {"--top-p", 1, "P", "sample among the most probable tokens holding P of the mass (0 or 1: off)"},
    {"--seed", 1, "S", "sampling seed (default 0)"},
    {"--precision", 1, "f32|bf16", "bf16: the decoder reads a bfloat16 copy of the weights (half the memory each token\n"
                                   "streams) and the prompt's matmuls take bf16 operands (default f32)"},
    {"--vocab", 1, "DIR", "GPT-2's encoder.json and vocab.bpe (default: the installed ones)"},
    END};
static const cli_group generate_groups[] = {{NULL, GPT, generate_options}, {NULL, 0, NULL}};

static const cli_option export_options[] = {
    {"--data", 1, "SPEC", "fashion-mnist, a CSV or an x.npy,y.npy pair"},
    {"--split", 1, "train|test", "which split of a built-in set (default test)"},
    {"--x", 1, "FILE.npy", "where the inputs go"},
    {"--y", 1, "FILE.npy", "where the labels go"},
    {"--label-column", 1, "NAME", "a CSV's label column (default label)"},
    END};
static const cli_group export_groups[] = {{NULL, CLI_ALL_KINDS, export_options}, {NULL, 0, NULL}};

static const cli_option tokenize_options[] = {
    {"--tokenizer", 1, "gpt2|bert", "GPT-2's byte-level BPE or BERT's WordPiece"},
    {"--vocab", 1, "V", "GPT-2's folder (encoder.json, vocab.bpe) or BERT's vocab.txt / vocab.json"},
    {"--decode", 0, NULL, "read ids, print the text"},
    {"--max-len", 1, "N", "BERT model inputs: [CLS] text [SEP] padded to N, as ids, types and mask"},
    {"--pair", 1, "FILE2", "BERT: a second text after the first (truncated longest-first)"},
    {"--head-tokens", 1, "H", "BERT: a long text keeps its first H and last N - 2 - H tokens"},
    END};
static const cli_group tokenize_groups[] = {{NULL, CLI_ALL_KINDS, tokenize_options}, {NULL, 0, NULL}};

static const cli_option bench_common[] = {
    {"--config", 1, "FILE", "the workload's model config; its kind must match fit, gpt2 or bert"},
    {"--init", 1, "DIR", "where the initial weights (and data) for the PyTorch side go"},
        {"--bucket-mb", 1, "MB", "under mpirun: data-parallel gradient buckets of MB megabytes (default 25)"},
    {"--zero", 1, "0|1", "under mpirun: 1 shards the optimizer moments (ZeRO stage 1)"},
    {"--precision", 1, "f32|bf16", "matmul operands in bfloat16 (as train --precision; default f32)"},
    END};
static const cli_option bench_fit[] = {
    {"--repeats", 1, "R", "timed epochs (default 3)"},
    {"--accuracy-epochs", 1, "E", "then train E epochs from the initial weights and report test accuracy"},
    END};
static const cli_option bench_gpt2[] = {
    {"--steps", 1, "N", "training steps (default: the config's)"},
    {"--probe-steps", 1, "P", "time P steps only (no final validation)"},
    {"--recompute", 0, NULL, "recompute each block in backward (W6)"},
    END};
static const cli_option bench_bert[] = {
    {"--epochs", 1, "E", "fine-tuning epochs (default 1)"},
    {"--probe-steps", 1, "P", "time P steps only (no test figures)"},
    END};
static const cli_option bench_predict[] = {
    {"--model", 1, "DIR", "a saved classifier (f32 or int8)"},
    {"--data", 1, "SPEC", "its test split is predicted whole, --repeats times (default 3)"},
    {"--batch-size", 1, "B", "examples per forward pass (default 64)"},
    END};
static const cli_option bench_decode[] = {
    {"--model", 1, "DIR", "a GPT-2 directory (any weights damo generate reads)"},
    {"--rows", 1, "N", "up to N sequences stepped together: 1, 2, 4, ... N (default 8)"},
    {"--steps", 1, "S", "timed steps per row count after a 16-token prompt (default 16)"},
    END};
static const cli_group bench_groups[] = {
    {"fit, gpt2, bert", CLI_ALL_KINDS, bench_common},
    {"bench predict (Q1: a saved classifier's inference speed; takes --repeats)", SEQ, bench_predict},
    {"bench fit (a Sequential config, Fashion-MNIST)", SEQ, bench_fit},
    {"bench gpt2 (W4: GPT-2 on Moby Dick)", GPT, bench_gpt2},
    {"bench decode (GPT-2 decoding: one sequence, and n stepped together as damo serve's slots are)", GPT, bench_decode},
    {"bench bert (W5: BERT fine-tuned on SpamAssassin)", BRT, bench_bert},
    {NULL, 0, NULL}};

/* ---- distill */
static const cli_option distill_options[] = {
    {"--teacher", 1, "DIR", "a trained classifier over the same inputs and classes (read only)"},
    {"--student", 1, "CONFIG", "the student's Sequential or functional config (its loss: sparse_categorical_crossentropy)"},
    {"--data", 1, "SPEC", "what the student trains on (the teacher predicts its training rows once; when the\n"
                          "student's config augments, the teacher scores each augmented batch as the student sees it)"},
    {"--out", 1, "DIR", "where the student is saved (default damo_model)"},
    {"--overwrite", 0, NULL, "replace a model already in --out"},
    {"--temperature", 1, "T", "softmax temperature of both sides' soft targets, > 0 (default 4)"},
    {"--alpha", 1, "A", "weight of the soft-target loss in [0, 1]; 1 - A weights the labels' (default 0.9)"},
    END};
static const cli_group distill_groups[] = {
    {NULL, SEQ, distill_options},
    {"training (as damo train of a Sequential config)", SEQ, train_sequential},
    {NULL, 0, NULL}};

/* ---- quantize */
static const cli_option quantize_options[] = {
    {"--model", 1, "DIR", "a saved f32 model directory"},
    {"--out", 1, "DIR", "where the int8 model goes (not --model itself)"},
    {"--data", 1, "SPEC", "calibration examples come from its training split (never the test split)"},
    {"--calibration", 1, "N", "calibration examples, spread over the split (default 2048)"},
    {"--method", 1, "minmax|percentile|histogram", "how each input range is chosen (default histogram: least squared error)"},
    {"--percentile", 1, "P", "with --method percentile: keep the P-th percentile range (default 99.99)"},
    {"--dynamic", 0, NULL, "quantise each batch's inputs from their own range (no calibration; text models)"},
    {"--evaluate", 0, NULL, "score the f32 and the int8 model on the test split of --data"},
    {"--label-column", 1, "NAME", "a CSV's label column (default label)"},
    END};
static const cli_option quantize_gpt2[] = {
    {"--model", 1, "DIR", "a GPT-2 directory (f32 or bf16 weights)"},
    {"--out", 1, "DIR", "where the quantised model goes (not --model itself)"},
    {"--format", 1, "q8_0|q4_0|int8", "weight-only blocks of 32 values with one scale each, 8-bit (default) or 4-bit; "
                                      "or int8 weights per output column and int8 products (inputs calibrated, or "
                                      "--dynamic)"},
    {"--data", 1, "TEXT", "moby-dick | sotu | a UTF-8 text file: int8 calibrates on its training part, --evaluate "
                          "scores its validation part"},
    {"--calibration", 1, "N", "with --format int8: calibration windows, spread over the training part (default 64)"},
    {"--method", 1, "minmax|percentile|histogram", "with --format int8: how each product's input range is chosen "
                                                   "(default histogram)"},
    {"--percentile", 1, "P", "with --method percentile: keep the P-th percentile range (default 99.99)"},
    {"--dynamic", 0, NULL, "with --format int8: quantise each batch's inputs from their own range (no calibration)"},
    {"--evaluate", 0, NULL, "validation loss and perplexity of the f32 and the quantised weights (as damo evaluate)"},
    {"--seq-len", 1, "T", "tokens per window (default: the model's context)"},
    {"--windows", 1, "N", "score N evenly spaced windows (default: all)"},
    {"--batch-size", 1, "B", "windows per forward pass (default 4)"},
    {"--vocab", 1, "DIR", "GPT-2's encoder.json and vocab.bpe (default: the installed ones)"},
    END};
static const cli_option quantize_bert[] = {
    {"--model", 1, "DIR", "a fine-tuned BERT directory (damo train's, or HuggingFace's)"},
    {"--out", 1, "DIR", "where the int8 model goes (not --model itself), with its vocab.txt and tokenizer_config.json"},
    {"--data", 1, "SPEC", "the labelled text: calibration mails from its training split; --evaluate scores its test split"},
    {"--calibration", 1, "N", "calibration mails, spread over the training split (default 2048)"},
    {"--method", 1, "minmax|percentile|histogram", "how each product's input range is chosen (default histogram)"},
    {"--percentile", 1, "P", "with --method percentile: keep the P-th percentile range (default 99.99)"},
    {"--dynamic", 0, NULL, "quantise each batch's inputs from their own range (no calibration, no --data needed)"},
    {"--attention", 1, "bf16|f32", "operands of attention's two products (default bf16, f32 sums; the softmax stays f32)"},
    {"--evaluate", 0, NULL, "loss and accuracy of the f32 and the int8 model on the test split of --data"},
    END};
static const cli_group quantize_groups[] = {
    {"a Sequential model: int8 weights and activations", SEQ, quantize_options},
    {"a GPT-2 model: weight-only blocks for damo generate", GPT, quantize_gpt2},
    {"a BERT classifier: int8 linear layers, inputs calibrated (static) or per batch (--dynamic)", BRT, quantize_bert},
    {NULL, 0, NULL}};

/* ---- federate */
static const cli_option federate_options[] = {
    {"--config", 1, "FILE", "the model (a Sequential or functional config; its optimizer trains each client)"},
    {"--data", 1, "SPEC", "the training rows, split among the clients; a built-in set's test split scores every round"},
    {"--out", 1, "DIR", "the global model, federated.json, history.csv and history.png after every round"},
    {"--overwrite", 0, NULL, "replace a model or run already in --out"},
    {"--resume", 0, NULL, "continue the run in --out (same config, data, clients and seed)"},
    {"--clients", 1, "K", "clients the rows are split among (default 100)"},
    {"--fraction", 1, "F", "the fraction of clients each round, in (0, 1] (default 0.1)"},
    {"--rounds", 1, "R", "rounds (default 100)"},
    {"--local-epochs", 1, "E", "epochs each client trains a round (default 5)"},
    {"--batch-size", 1, "B", "a client's batch (default 10; 0: all its rows in one batch)"},
    {"--algorithm", 1, "fedavg|fedsgd", "fedsgd: one full-batch gradient step per client and round (E 1, B all)"},
    {"--partition", 1, "iid|shards:S|dirichlet:A", "iid (default); S label shards per client (shards:2 is McMahan et al.'s\n"
                                                   "pathological non-IID split); class proportions ~ Dirichlet(A)"},
    {"--lr", 1, "X", "the clients' learning rate (default: the config's)"},
    {"--seed", 1, "S", "partition, client choice, initialisation and local shuffling (default 42)"},
    {"--target-accuracy", 1, "A", "stop after the first round whose test accuracy reaches A, and say when"},
    {"--dp-clip", 1, "S", "user-level DP: clip each client's update to norm S, equal weights"},
    {"--dp-noise", 1, "SIGMA", "user-level DP: N(0, SIGMA^2 S^2) on the sum of the updates (epsilon per round)"},
    {"--dp-delta", 1, "D", "user-level DP: delta, below 1/K (default min(1e-5, 1/(10 K)))"},
    {"--secure-agg", 0, NULL, "pairwise-mask secure aggregation: the server adds masked updates it cannot read"},
    {"--label-column", 1, "NAME", "a CSV's label column (default label)"},
    {"--np", 1, "N", "clients spread over N MPI processes (starts `mpirun -np N` on this command)"},
    END};
static const cli_group federate_groups[] = {{NULL, SEQ, federate_options}, {NULL, 0, NULL}};

/* ---- prune */
static const cli_option prune_options[] = {
    {"--model", 1, "DIR", "a saved model whose config names its optimizer and loss (it fine-tunes)"},
    {"--out", 1, "DIR", "where the pruned model goes (not --model itself)"},
    {"--data", 1, "SPEC", "fine-tuning on its training split; its test split (if any) is scored before and after"},
    {"--sparsity", 1, "S", "the fraction of dense and conv2d kernel weights that end at 0, in (0, 1)"},
    {"--schedule", 1, "gradual|oneshot", "gradual (default): 0 -> S along Zhu & Gupta's cubic over the first 70% of\n"
                                         "the steps, masks chosen again every --frequency steps; oneshot: all at once"},
    {"--scope", 1, "global|layer", "global (default): one magnitude threshold over every kernel; layer: each kernel to S"},
    {"--frequency", 1, "N", "gradual: steps between mask updates (default 100)"},
    {"--epochs", 1, "E", "fine-tuning epochs (default 2)"},
    {"--batch-size", 1, "B", "examples per step (default 64)"},
    {"--lr", 1, "X", "fine-tuning learning rate (default: the config's optimizer's)"},
    {"--seed", 1, "S", "shuffling and dropout seed (default 42)"},
    {"--verbose", 1, "0|1|2", "0 silent, 1 a progress bar, 2 a line per epoch"},
    {"--label-column", 1, "NAME", "a CSV's label column (default label)"},
    {"--sweep", 1, "S1,S2,...", "instead of --sparsity and --out: each sparsity from the saved model, scored on the\n"
                                "test split of --data (nothing saved)"},
    {"--curve", 1, "FILE.png", "with --sweep: test accuracy and loss against sparsity"},
    END};
static const cli_group prune_groups[] = {{NULL, SEQ, prune_options}, {NULL, 0, NULL}};

/* ---- serve */
static const cli_option serve_options[] = {
    {"--model", 1, "DIR", "a saved model directory: a classifier (Sequential, functional, int8), a fine-tuned BERT\n"
                          "or a GPT-2 (f32, bf16, int8, q8_0/q4_0 blocks)"},
    {"--host", 1, "ADDR", "the address to listen on (default 127.0.0.1; 0.0.0.0 or :: for every interface)"},
    {"--port", 1, "PORT", "the port (default 8080; 0: any free one, printed at the start)"},
    {"--threads", 1, "N", "threads the model computes with (default: every core)"},
    {"--max-batch", 1, "B", "classifiers: rows per model run, gathered from concurrent requests (default 32)"},
    {"--batch-wait-ms", 1, "M", "classifiers: how long the first request of a batch waits for others (default 5)"},
    {"--slots", 1, "S", "GPT-2: requests decoding together, a token each in turn (default 4)"},
    {"--queue", 1, "Q", "requests that may wait for the model; more get 429 (default 64)"},
    {"--max-tokens", 1, "N", "GPT-2: the most tokens one request may ask for (default 1024)"},
    {"--timeout-s", 1, "S", "a request not answered within S seconds gets 503 (default 120)"},
    {"--max-body-mb", 1, "MB", "larger request bodies get 413 (default 8)"},
    {"--drain-s", 1, "S", "after SIGTERM or SIGINT, how long running requests may take to finish (default 30)"},
    {"--precision", 1, "f32|bf16", "matmul operands in bfloat16 (as predict and generate; default f32)"},
    {"--vocab", 1, "DIR", "GPT-2's encoder.json and vocab.bpe (default: the installed ones)"},
    END};
static const cli_group serve_groups[] = {{NULL, CLI_ALL_KINDS, serve_options}, {NULL, 0, NULL}};
static const char serve_note[] =
    "Endpoints: GET /health, /v1/models, /metrics (Prometheus), / (the playground page);\n"
    "classifiers and BERT: POST /v1/predict ({\"inputs\": [...]}, {\"images\": [base64, ...]}, {\"texts\": [...]}, or a\n"
    "raw picture or text body); BERT also POST /v1/embeddings (OpenAI's shape, \"pooling\": \"cls\"|\"mean\");\n"
    "GPT-2: POST /v1/completions and /v1/chat/completions (OpenAI's, \"stream\": true for server-sent events).\n"
    "Errors are JSON in OpenAI's shape. SIGTERM: new requests get 503, running ones finish, then it exits 0.";

/* ---- explain */
static const cli_option explain_options[] = {
    {"--model", 1, "DIR", "a saved f32 classifier of pictures, numbers or text (int8 models have no gradients: explain\n"
                          "the f32 model they came from)"},
    {"--input", 1, "PATH", "a picture, a folder of pictures (converted as damo predict converts them; a folder of\n"
                           "folders named as the classes gives each picture's true class), an x.npy, or for a text\n"
                           "model one mail (attributions per word, at the embeddings)"},
    {"--html", 1, "FILE.html", "a text model: the words shaded by their attributions as a self-contained page"},
    {"--method", 1, "M", "saliency | gradient-x-input | smoothgrad | integrated-gradients (default) | occlusion |\n"
                         "grad-cam"},
    {"--layer", 1, "NAME", "grad-cam: the layer whose feature maps are read (default: the last conv2d)"},
    {"--target", 1, "CLASS", "auto (the predicted class, default), a class index or a class name; its logit is explained"},
    {"--out", 1, "FILE.png", "the input, the heat map, both blended and a colour bar side by side (a row per picture);\n"
                             "a text model: its words shaded"},
    {"--attributions", 1, "FILE.npy", "the raw attributions, the shape of one input (a folder: one row per picture)"},
    {"--steps", 1, "N", "integrated gradients: points on the path (default 64)"},
    {"--integration", 1, "riemann|gauss-legendre", "integrated gradients: midpoint rule (default) or Gauss-Legendre nodes"},
    {"--baseline", 1, "B", "integrated gradients and occlusion: black (default), blur (the input blurred), or a picture\n"
                           "or x.npy"},
    {"--samples", 1, "N", "smoothgrad: noisy copies (default 32)"},
    {"--noise", 1, "F", "smoothgrad: the noise's sigma as a fraction of the input's range (default 0.15)"},
    {"--window", 1, "W", "occlusion: the patch's side in pixels (default 4)"},
    {"--stride", 1, "S", "occlusion: the patch's step (default 2)"},
    {"--seed", 1, "S", "smoothgrad's noise (default 0)"},
    {"--index", 1, "I", "an x.npy input: the first row explained (default 0)"},
    {"--count", 1, "N", "an x.npy input: N rows from --index (one picture row each)"},
    {"--labels", 1, "y.npy", "an x.npy input's integer labels: each row's caption also names the true class"},
    {"--data", 1, "SPEC", "with --faithfulness: the data set whose test split is used"},
    {"--faithfulness", 1, "N", "the deletion test on N test examples of --data: the predicted class's probability as the\n"
                               "most attributed elements are deleted (set to the baseline) against a random order"},
    {"--curve", 1, "FILE.png", "with --faithfulness: both curves as a picture"},
    {"--invert", 1, "auto|no", "as damo predict: a picture on a light background is inverted (default auto)"},
    {"--sanity", 0, NULL, "also explain with the model's weights drawn afresh and print the rank correlation of the maps"},
    END};
static const cli_option explain_bert[] = {
    {"--model", 1, "DIR", "a fine-tuned BERT directory"},
    {"--input", 1, "MAIL", "the mail (or text) explained"},
    {"--out", 1, "FILE.png", "every layer's and head's attention as one grid"},
    {"--html", 1, "FILE.html", "a head view: pick a layer and head, lines from each token to those it attends to"},
    {"--words", 1, "FILE.html", "the tokens shaded by their integrated gradients (a self-contained page)"},
    {"--words-png", 1, "FILE.png", "the same as a picture"},
    {"--steps", 1, "N", "integrated gradients' points (default 64; 32 in the deletion test)"},
    {"--data", 1, "SPEC", "with --faithfulness: the labelled text set whose test split is used"},
    {"--faithfulness", 1, "N", "the deletion test on N test texts: tokens removed by attribution against a random order"},
    {"--curve", 1, "FILE.png", "with --faithfulness: both curves as a picture"},
    END};
static const cli_option explain_gpt2[] = {
    {"--model", 1, "DIR", "a GPT-2 directory (f32 or bf16 weights: gradients need them unquantised)"},
    {"--prompt", 1, "TEXT", "the prompt; its next token is explained"},
    {"--next", 1, "TOKEN", "the next token explained (one GPT-2 token, often with its leading space; default: the\n"
                           "most probable)"},
    {"--steps", 1, "N", "integrated gradients' points (default 64)"},
    {"--out", 1, "FILE.png", "every layer's and head's attention as one grid"},
    {"--html", 1, "FILE.html", "a head view of the prompt's attention"},
    {"--vocab", 1, "DIR", "GPT-2's encoder.json and vocab.bpe (default: the installed ones)"},
    END};
static const cli_group explain_groups[] = {{"a classifier (Sequential or functional)", SEQ, explain_options},
                                           {"a fine-tuned BERT: attention maps and rollout for one mail", BRT, explain_bert},
                                           {"GPT-2: a prompt's next token", GPT, explain_gpt2},
                                           {NULL, 0, NULL}};

static const cli_group no_groups[] = {{NULL, 0, NULL}};

static int info(int argc, char **argv) {
  (void)argc, (void)argv;
  printf("%s\n", damo_info_string());
  return 0;
}

static int bench(int argc, char **argv);

static const cli_command commands[] = {
    {.name = "info", .synopsis = "", .summary = "version, SIMD path, threads", .usage = "damo info",
     .groups = no_groups, .run = info},
    {.name = "train", .synopsis = "--config FILE --data SPEC [--out DIR]", .summary = "train a model and save it",
     .usage = "damo train --config FILE --data SPEC|TEXT [--out DIR] [options]", .groups = train_groups,
     .notes = spec_note, .by_kind = {cli_train_sequential, cli_train_gpt2, cli_train_bert}},
    {.name = "evaluate", .synopsis = "--model DIR --data SPEC", .summary = "score a saved model on held-out data",
     .usage = "damo evaluate --model DIR --data SPEC|TEXT [options]", .groups = evaluate_groups, .notes = spec_note,
     .by_kind = {cli_evaluate_sequential, cli_evaluate_gpt2, cli_evaluate_bert}},
    {.name = "predict", .synopsis = "--model DIR --input PATH", .summary = "class probabilities (or outputs)",
     .usage = "damo predict --model DIR --input x.npy|FILE.csv|IMAGE|FOLDER|MAIL [options]", .groups = predict_groups,
     .by_kind = {cli_predict_sequential, NULL, cli_predict_bert}, .not_applicable = {NULL, "use damo generate", NULL}},
    {.name = "generate", .synopsis = "--model DIR --prompt TEXT", .summary = "sample text from a GPT-2 model",
     .usage = "damo generate --model DIR --prompt TEXT [options]", .groups = generate_groups,
     .by_kind = {NULL, cli_generate, NULL},
     .not_applicable = {"use damo predict", NULL, "use damo predict (or damo evaluate)"}},
    {.name = "summary", .synopsis = "--model DIR | --config FILE",
     .summary = "the model's layers, output shapes and parameter counts", .usage = "damo summary --model DIR | --config FILE",
     .groups = summary_groups, .by_kind = {cli_summary_sequential, cli_summary_gpt2, cli_summary_bert}},
    {.name = "quantize", .synopsis = "--model DIR --out DIR --data SPEC",
     .summary = "int8 post-training quantisation (dense, conv2d, LSTM/GRU, embeddings; GPT-2 blocks or int8; BERT int8)",
     .usage = "damo quantize --model DIR --out DIR (--data SPEC [--method M] [--calibration N] | --dynamic) "
              "[--evaluate]\n       damo quantize --model GPT2DIR --out DIR [--format q8_0|q4_0 | --format int8 (--data TEXT | --dynamic)] "
              "[--evaluate --data TEXT]"
              "\n       damo quantize --model BERTDIR --out DIR (--data SPEC [--method M] [--calibration N] | --dynamic) "
              "[--evaluate]",
     .groups = quantize_groups, .by_kind = {cli_quantize_sequential, cli_quantize_gpt2, cli_quantize_bert}},
    {.name = "federate", .synopsis = "--config FILE --data SPEC --out DIR",
     .summary = "federated averaging over clients that keep their rows (FedAvg, FedSGD, user-level DP, secure aggregation)",
     .usage = "damo federate --config FILE --data SPEC --out DIR [--clients K --fraction F --rounds R --local-epochs E "
              "--batch-size B --partition iid|shards:S|dirichlet:A] [options]",
     .groups = federate_groups, .by_kind = {cli_federate, NULL, NULL},
     .not_applicable = {NULL, "federated training takes Sequential or functional configs", "federated training takes "
                        "Sequential or functional configs"}},
    {.name = "prune", .synopsis = "--model DIR --out DIR --data SPEC --sparsity S",
     .summary = "magnitude pruning of dense and conv2d kernels while fine-tuning",
     .usage = "damo prune --model DIR --out DIR --data SPEC --sparsity S [--schedule gradual|oneshot] "
              "[--scope global|layer] [--epochs E]",
     .groups = prune_groups, .by_kind = {cli_prune_sequential, NULL, NULL},
     .not_applicable = {NULL, "pruning GPT-2 is not built yet (issue 23)", "pruning BERT is not built yet (issue 23)"}},
    {.name = "distill", .synopsis = "--teacher DIR --student CONFIG --data SPEC",
     .summary = "train a small classifier on a trained one's soft targets (knowledge distillation)",
     .usage = "damo distill --teacher DIR --student CONFIG --data SPEC [--temperature T] [--alpha A] [--out DIR] "
              "[options]",
     .groups = distill_groups, .notes = spec_note, .by_kind = {cli_distill, NULL, NULL},
     .not_applicable = {NULL, "distilling into GPT-2 is not built yet (issue 23)",
                        "distilling into BERT is not built yet (issue 23)"}},
    {.name = "serve", .synopsis = "--model DIR [--host ADDR] [--port PORT]",
     .summary = "an HTTP server for a model: predictions, OpenAI-compatible completions, a playground page",
     .usage = "damo serve --model DIR [--host 127.0.0.1] [--port 8080] [--threads N] [--max-batch B] "
              "[--batch-wait-ms M] [--slots S]",
     .groups = serve_groups, .notes = serve_note, .by_kind = {cli_serve, cli_serve, cli_serve}},
    {.name = "explain", .synopsis = "--model DIR --input PATH [--method M]",
     .summary = "which parts of an input made a classifier decide (saliency, integrated gradients, ...)",
     .usage = "damo explain --model DIR --input PICTURE|FOLDER|x.npy|MAIL [--method M] [--target auto|CLASS] "
              "[--out FILE.png] [--attributions FILE.npy]\n"
              "       damo explain --model BERTDIR --input MAIL [--out maps.png] [--html heads.html]\n"
              "       damo explain --model GPT2DIR --prompt TEXT [--next TOKEN] [--out maps.png] [--html heads.html]",
     .groups = explain_groups, .by_kind = {cli_explain, cli_explain_gpt2, cli_explain_bert}},
    {.name = "export", .synopsis = "--data SPEC --x x.npy", .summary = "write a data set's split as .npy arrays",
     .usage = "damo export --data SPEC [--split train|test] --x x.npy [--y y.npy]", .groups = export_groups,
     .run = cli_export},
    {.name = "tokenize", .synopsis = "--tokenizer gpt2|bert [FILE...]",
     .summary = "text <-> GPT-2 or BERT ids (standard input, or one line per FILE: FILE<TAB>ids)",
     .usage = "damo tokenize --tokenizer gpt2|bert [--vocab V] [--decode] [FILE...]\n"
              "damo tokenize --tokenizer bert --max-len N [--pair FILE2 | --head-tokens H] [FILE...]",
     .positional = "FILE...", .groups = tokenize_groups, .run = cli_tokenize},
    {.name = "bench", .synopsis = "peak | gemm M N K ... | fit|gpt2|bert --config FILE --init DIR",
     .summary = "damo's side of make bench: one JSON object per run",
     .usage = "damo bench peak                      FMA peak, GFLOP/s\n"
              "damo bench gemm M N K [M N K ...]    GEMM GFLOP/s per size\n"
              "damo bench gemm-bf16 M N K [...]     the same with bf16 operands (f32 accumulation)\n"
              "damo bench gemm-int8 M N K [...]     int8 products (u8 x s8, int32 sums), GOP/s against the int8 peak\n"
              "damo bench sparse B K N              x W by the dense GEMM and the CSR product, W 50-99% zeros\n"
              "damo bench sparse-conv N H W C K F   a K x K conv2d, dense and direct sparse, kernel 50-99% zeros\n"
              "damo bench fit|gpt2|bert --config FILE --init DIR [options]\n"
              "damo bench predict --model DIR --data SPEC [--batch-size B] [--repeats R]\n"
              "damo bench decode --model GPT2DIR [--rows N] [--steps S] [--precision bf16]",
     .groups = bench_groups, .run = bench, .by_kind = {cli_bench_fit, cli_bench_gpt2, cli_bench_bert},
     .first_option = 3},
};
enum { N_COMMANDS = sizeof commands / sizeof commands[0] };

static const cli_command *find_command(const char *name) {
  for (int i = 0; i < N_COMMANDS; i++)
    if (!strcmp(commands[i].name, name)) return &commands[i];
  return NULL;
}

static int usage(FILE *f) {
  fprintf(f, "usage: damo COMMAND [options]     (damo COMMAND --help: its options)\n\ncommands:\n");
  for (int i = 0; i < N_COMMANDS; i++)
    fprintf(f, "  %-9s %s\n  %-9s   %s\n", commands[i].name, commands[i].synopsis, "", commands[i].summary);
  fprintf(f, "\nA model directory or config is Sequential, GPT-2 (model_type gpt2) or BERT (model_type bert);\n"
             "train, evaluate, predict, summary and bench do what fits its kind.\n\n%s\n"
             "Options take --opt VALUE or --opt=VALUE.\n"
             "Environment: DAMO_NUM_THREADS, DAMO_SIMD=scalar|avx2|avx512, DAMO_DATA_DIR\n", spec_note);
  return f == stderr ? 2 : 0;
}

/* The handler for the kind of --model DIR (or --config FILE): options checked for that kind.
 * A model that cannot be read goes to fallback's handler, which says why. */
static int run_by_kind(const cli_command *c, int argc, char **argv, cli_kind fallback) {
  const char *path = cli_opt(argc, argv, "--model");
  if (!path) path = cli_opt(argc, argv, "--config");
  if (!path) path = cli_opt(argc, argv, "--student"); /* distill */
  cli_kind kind = cli_kind_of(path);
  if (kind == CLI_KIND_UNSUPPORTED) return cli_fail(c->name);
  if (kind == CLI_KIND_UNKNOWN) kind = fallback;
  if (!c->by_kind[kind]) {
    fprintf(stderr, "damo %s: %s is a %s model: %s\n", c->name, path, cli_kind_name(kind), c->not_applicable[kind]);
    return 2;
  }
  if (!cli_check_options(c, argc, argv, CLI_KIND_BIT(kind))) return 2;
  /* --precision: one process-wide setting every product reads (damo_set_matmul_precision). */
  const char *precision = cli_opt(argc, argv, "--precision");
  if (precision && strcmp(precision, "f32") && strcmp(precision, "bf16")) {
    fprintf(stderr, "damo %s: --precision is f32 or bf16, not '%s'\n", c->name, precision);
    return 2;
  }
  if (precision) damo_set_matmul_precision(!strcmp(precision, "bf16") ? DAMO_MATMUL_BF16 : DAMO_MATMUL_F32);
  return c->by_kind[kind](argc, argv);
}

/* peak and gemm take no model; fit, gpt2 and bert run the handler of the --config's kind. */
static int bench(int argc, char **argv) {
  const cli_command *c = find_command("bench");
  const char *what = argc > 2 ? argv[2] : "";
  if (!strcmp(what, "peak") || !strcmp(what, "gemm") || !strcmp(what, "gemm-bf16") || !strcmp(what, "gemm-int8") ||
      !strcmp(what, "sparse") || !strcmp(what, "sparse-conv"))
    return cli_bench(argc, argv);
  if (!strcmp(what, "predict")) return cli_check_options(c, argc, argv, SEQ) ? cli_bench_predict(argc, argv) : 2;
  if (!strcmp(what, "decode")) {
    if (!cli_check_options(c, argc, argv, GPT)) return 2;
    const char *precision = cli_opt(argc, argv, "--precision");
    if (precision && strcmp(precision, "f32") && strcmp(precision, "bf16")) {
      fprintf(stderr, "damo bench decode: --precision is f32 or bf16, not '%s'\n", precision);
      return 2;
    }
    if (precision) damo_set_matmul_precision(!strcmp(precision, "bf16") ? DAMO_MATMUL_BF16 : DAMO_MATMUL_F32);
    return cli_bench_decode(argc, argv);
  }
  static const char *const words[CLI_N_KINDS] = {"fit", "gpt2", "bert"};
  for (int k = 0; k < CLI_N_KINDS; k++) {
    if (strcmp(what, words[k])) continue;
    cli_kind kind = cli_kind_of(cli_opt(argc, argv, "--config"));
    if (kind == CLI_KIND_UNSUPPORTED) return cli_fail("bench");
    if (kind != CLI_KIND_UNKNOWN && kind != (cli_kind)k) {
      fprintf(stderr, "damo bench %s: %s is a %s config: use damo bench %s\n", what, cli_opt(argc, argv, "--config"),
              cli_kind_name(kind), words[kind]);
      return 2;
    }
    return run_by_kind(c, argc, argv, (cli_kind)k);
  }
  cli_print_help(stderr, c);
  return 2;
}

/* "--opt=value" becomes "--opt" "value", so every command takes both spellings. The
 * strings point into the original argv (cut at the '=' in place); the array lives as long
 * as the process (held by a static, so leak checkers see it reachable). */
static char **split_argv;

static char **split_equals(int *argc, char **argv) {
  char **out = split_argv = malloc((size_t)(2 * *argc + 1) * sizeof *out);
  if (!out) return argv;
  int n = 0;
  for (int i = 0; i < *argc; i++) {
    char *eq = i >= 2 && !strncmp(argv[i], "--", 2) ? strchr(argv[i], '=') : NULL;
    out[n++] = argv[i];
    if (eq) {
      *eq = '\0';
      out[n++] = eq + 1;
    }
  }
  out[n] = NULL;
  *argc = n;
  return out;
}

/* OpenMP threads waiting at a barrier spin (libgomp: some 300,000 rounds) before they sleep.
 * Beside other busy processes a spinning thread holds the core that the thread it waits for
 * needs: W1 kept 26-32% of its quiet speed beside one or two busy processes with spinning
 * and 63-68% with passive waiting (bench/contention.py, 2 cores), which costs it 13% when
 * the machine is quiet (W2: nothing). libgomp reads the policy once, when it loads, so damo
 * sets it and runs itself again, once, unless the user chose a policy or a spin count. */
static void prefer_passive_waiting(char **argv) {
  if (getenv("OMP_WAIT_POLICY") || getenv("GOMP_SPINCOUNT")) return;
  if (setenv("OMP_WAIT_POLICY", "passive", 1) != 0) return;
  execv("/proc/self/exe", argv); /* returns only on failure: then run as we are */
}

int main(int argc, char **argv) {
  prefer_passive_waiting(argv);
  if (argc < 2) return usage(stderr);
  argv = split_equals(&argc, argv);
  const char *name = argv[1];
  if (!strcmp(name, "help") || !strcmp(name, "--help") || !strcmp(name, "-h")) {
    if (argc < 3) return usage(stdout);
    const cli_command *c = find_command(argv[2]);
    if (!c) {
      fprintf(stderr, "damo help: unknown command '%s'\n\n", argv[2]);
      return usage(stderr);
    }
    cli_print_help(stdout, c);
    return 0;
  }
  if (!strcmp(name, "--version")) name = "info";
  const cli_command *c = find_command(name);
  if (!c) {
    fprintf(stderr, "damo: unknown command '%s'\n\n", name);
    return usage(stderr);
  }
  if (cli_wants_help(c, argc, argv)) {
    cli_print_help(stdout, c);
    return 0;
  }
  if (c->run == bench) return cli_world_begin() ? cli_world_end(bench(argc, argv)) : 1;
  if (c->run) return cli_check_options(c, argc, argv, CLI_ALL_KINDS) ? c->run(argc, argv) : 2;
  if (!cli_world_begin()) return 1;
  if ((!strcmp(name, "train") || !strcmp(name, "federate")) && cli_opt(argc, argv, "--np"))
    return cli_launch(argc, argv, cli_opt(argc, argv, "--np"));
  /* A model that cannot be read goes to the first kind the command has, which says why. */
  cli_kind fallback = CLI_SEQUENTIAL;
  while (!c->by_kind[fallback]) fallback++;
  return cli_world_end(run_by_kind(c, argc, argv, fallback));
}
