/* registry.c - the op table: one entry per damo_op, each defined in its family's file. */
#include "ops/ops.h"

const damo_op_def damo_op_def_input = {"input", 0, NULL, NULL, NULL, 0};
const damo_op_def damo_op_def_param = {"param", 0, NULL, NULL, NULL, 0};
const damo_op_def damo_op_def_constant = {"constant", 0, NULL, NULL, NULL, 0};

const damo_op_def *const damo_op_table[DAMO_OP_COUNT] = {
    [DAMO_OP_INPUT] = &damo_op_def_input,
    [DAMO_OP_PARAM] = &damo_op_def_param,
    [DAMO_OP_CONSTANT] = &damo_op_def_constant,
    [DAMO_OP_MATMUL] = &damo_op_def_matmul,
    [DAMO_OP_ADD] = &damo_op_def_add,
    [DAMO_OP_SUB] = &damo_op_def_sub,
    [DAMO_OP_MUL] = &damo_op_def_mul,
    [DAMO_OP_DIV] = &damo_op_def_div,
    [DAMO_OP_SCALE] = &damo_op_def_scale,
    [DAMO_OP_RELU] = &damo_op_def_relu,
    [DAMO_OP_SIGMOID] = &damo_op_def_sigmoid,
    [DAMO_OP_TANH] = &damo_op_def_tanh,
    [DAMO_OP_EXP] = &damo_op_def_exp,
    [DAMO_OP_LOG] = &damo_op_def_log,
    [DAMO_OP_SOFTMAX] = &damo_op_def_softmax,
    [DAMO_OP_LOG_SOFTMAX] = &damo_op_def_log_softmax,
    [DAMO_OP_SUM] = &damo_op_def_sum,
    [DAMO_OP_MEAN] = &damo_op_def_mean,
    [DAMO_OP_RESHAPE] = &damo_op_def_reshape,
    [DAMO_OP_TRANSPOSE] = &damo_op_def_transpose,
    [DAMO_OP_DROPOUT] = &damo_op_def_dropout,
    [DAMO_OP_SOFTMAX_CE] = &damo_op_def_softmax_ce,
    [DAMO_OP_SOFT_CE] = &damo_op_def_soft_ce,
    [DAMO_OP_BCE_LOGITS] = &damo_op_def_bce_logits,
    [DAMO_OP_MSE] = &damo_op_def_mse,
    [DAMO_OP_DENSE] = &damo_op_def_dense,
    [DAMO_OP_LSTM] = &damo_op_def_lstm,
    [DAMO_OP_EMBEDDING] = &damo_op_def_embedding,
    [DAMO_OP_GRU] = &damo_op_def_gru,
    [DAMO_OP_CONV2D] = &damo_op_def_conv2d,
    [DAMO_OP_QDENSE] = &damo_op_def_qdense,
    [DAMO_OP_QCONV2D] = &damo_op_def_qconv2d,
    [DAMO_OP_MAX_POOL2D] = &damo_op_def_max_pool2d,
    [DAMO_OP_AVG_POOL2D] = &damo_op_def_avg_pool2d,
    [DAMO_OP_GLOBAL_AVG_POOL2D] = &damo_op_def_global_avg_pool2d,
    [DAMO_OP_BATCH_NORM] = &damo_op_def_batch_norm,
    [DAMO_OP_SEQUENCE_MASK] = &damo_op_def_sequence_mask,
    [DAMO_OP_CONCAT] = &damo_op_def_concat,
    [DAMO_OP_GLOBAL_POOL1D] = &damo_op_def_global_pool1d,
    [DAMO_OP_LAYER_NORM] = &damo_op_def_layer_norm,
    [DAMO_OP_GELU] = &damo_op_def_gelu,
    [DAMO_OP_ATTENTION] = &damo_op_def_attention,
    [DAMO_OP_SLICE_LAST] = &damo_op_def_slice_last,
    [DAMO_OP_LINEAR_CE] = &damo_op_def_linear_ce,
};
_Static_assert(DAMO_OP_COUNT == 44, "a new op needs an entry in damo_op_table");
