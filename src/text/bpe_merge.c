/* bpe_merge.c - merging one piece of text by rank, two ways that give the same ids.
 *
 * The rule (the reference encoder's): each round takes the lowest rank among the adjacent
 * pairs, on a tie the rightmost pair (ties arise only through the reference's aliased
 * pairs, see bpe_vocab.c), and merges every non-overlapping occurrence of that exact pair
 * (left id, right id) from the left; rounds repeat until no adjacent pair has a rank.
 *
 * bpe_merge_simple rescans the piece every round: quick for words, quadratic for a long
 * piece (200 KB of random letters took 8 s). bpe_merge_heap keeps the symbols in a linked
 * list and the candidate pairs in a min-heap by rank, so a round touches only the pairs it
 * merges and their neighbours: O(n log n). */
#include "bpe_internal.h"

size_t bpe_merge_simple(const damo_bpe *bpe, const unsigned char *word, size_t len, int32_t *sym) {
  for (size_t i = 0; i < len; i++) sym[i] = bpe->byte_id[word[i]];
  size_t n = len;
  while (n > 1) {
    const bpe_pair_slot *best = NULL;
    for (size_t i = 0; i + 1 < n; i++) {
      const bpe_pair_slot *s = bpe_pair_find(bpe, sym[i], sym[i + 1]);
      if (s && (!best || s->rank <= best->rank)) best = s;
    }
    if (!best) break;
    size_t kept = 0;
    for (size_t i = 0; i < n;) {
      if (i + 1 < n && sym[i] == best->left && sym[i + 1] == best->right) {
        sym[kept++] = best->merged;
        i += 2;
      } else {
        sym[kept++] = sym[i++];
      }
    }
    n = kept;
  }
  return n;
}

/* A candidate: the pair starting at symbol `pos` had ids (left, right) when pushed. It is
 * stale once either symbol changed; positions are byte offsets, so they keep their order. */
typedef struct pair_candidate {
  int32_t rank;
  int32_t pos;
  int32_t left, right;
} pair_candidate;

typedef struct merge_state {
  const damo_bpe *bpe;
  int32_t *id;         /* per symbol (indexed by its first byte); -1: absorbed by its left */
  int32_t *next, *prev; /* neighbours, -1 at the ends */
  pair_candidate *heap;
  size_t n_heap;
} merge_state;

static void heap_push(merge_state *m, pair_candidate c) {
  size_t i = m->n_heap++;
  while (i > 0 && m->heap[(i - 1) / 2].rank > c.rank) {
    m->heap[i] = m->heap[(i - 1) / 2];
    i = (i - 1) / 2;
  }
  m->heap[i] = c;
}

static pair_candidate heap_pop(merge_state *m) {
  pair_candidate top = m->heap[0], last = m->heap[--m->n_heap];
  size_t i = 0;
  for (;;) {
    size_t child = 2 * i + 1;
    if (child >= m->n_heap) break;
    if (child + 1 < m->n_heap && m->heap[child + 1].rank < m->heap[child].rank) child++;
    if (m->heap[child].rank >= last.rank) break;
    m->heap[i] = m->heap[child];
    i = child;
  }
  if (m->n_heap) m->heap[i] = last;
  return top;
}

/* Pushes the pair starting at pos if it has a rank. */
static void push_pair_at(merge_state *m, int32_t pos) {
  if (pos < 0 || m->next[pos] < 0) return;
  int32_t left = m->id[pos], right = m->id[m->next[pos]];
  const bpe_pair_slot *s = bpe_pair_find(m->bpe, left, right);
  if (s) heap_push(m, (pair_candidate){s->rank, pos, left, right});
}

static int still_there(const merge_state *m, const pair_candidate *c) {
  return m->id[c->pos] == c->left && m->next[c->pos] >= 0 && m->id[m->next[c->pos]] == c->right;
}

static int by_position(const void *a, const void *b) {
  int32_t x = ((const pair_candidate *)a)->pos, y = ((const pair_candidate *)b)->pos;
  return (x > y) - (x < y);
}

size_t bpe_merge_heap(const damo_bpe *bpe, const unsigned char *word, size_t len, int32_t *sym) {
  if (len > INT32_MAX / 4) return SIZE_MAX;
  merge_state m = {bpe, malloc(len * sizeof(int32_t)), malloc(len * sizeof(int32_t)), malloc(len * sizeof(int32_t)),
                   /* every merge pushes at most two pairs: n-1 + 2(n-1) in all */
                   malloc(3 * len * sizeof(pair_candidate)), 0};
  pair_candidate *round = malloc(len * sizeof *round);
  size_t result = SIZE_MAX;
  if (!m.id || !m.next || !m.prev || !m.heap || !round) goto done;
  for (size_t i = 0; i < len; i++) {
    m.id[i] = bpe->byte_id[word[i]];
    m.prev[i] = (int32_t)i - 1;
    m.next[i] = i + 1 < len ? (int32_t)i + 1 : -1;
  }
  for (size_t i = 0; i + 1 < len; i++) push_pair_at(&m, (int32_t)i);

  while (m.n_heap) {
    /* This round's candidates: every live pair of the lowest rank. */
    int32_t rank = m.heap[0].rank;
    size_t n_round = 0;
    while (m.n_heap && m.heap[0].rank == rank) {
      pair_candidate c = heap_pop(&m);
      if (still_there(&m, &c)) round[n_round++] = c;
    }
    if (!n_round) continue;
    qsort(round, n_round, sizeof *round, by_position);
    int32_t left = round[n_round - 1].left, right = round[n_round - 1].right; /* the rightmost's pair */
    int32_t merged = bpe_pair_find(bpe, left, right)->merged;
    for (size_t k = 0; k < n_round; k++) {
      pair_candidate *c = &round[k];
      if (c->left != left || c->right != right) {
        heap_push(&m, *c); /* another pair of the same rank (an alias): a later round */
        continue;
      }
      if (!still_there(&m, c)) continue; /* overlapped by the occurrence just merged */
      int32_t gone = m.next[c->pos];
      m.id[c->pos] = merged;
      m.id[gone] = -1;
      m.next[c->pos] = m.next[gone];
      if (m.next[gone] >= 0) m.prev[m.next[gone]] = c->pos;
      push_pair_at(&m, m.prev[c->pos]);
      push_pair_at(&m, c->pos);
    }
  }
  result = 0;
  for (int32_t i = 0; i >= 0; i = m.next[i]) sym[result++] = m.id[i];
done:
  free(m.id);
  free(m.next);
  free(m.prev);
  free(m.heap);
  free(round);
  return result;
}
