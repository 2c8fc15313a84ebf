/* worker/data.c: the memory-mapped token file and the (seed, step, sample) order of samples.
 * See data.h for the contract. */
#include "worker/data.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* SplitMix64's finaliser: a bijection on 64 bits whose output bits each depend on every input
 * bit, so consecutive counters give unrelated values. */
static uint64_t mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static uint64_t sample_hash(uint64_t seed, int64_t step, int64_t sample)
{
    /* Chaining the mixer keeps (seed, step, sample) and e.g. (seed, step+1, sample-1) apart. */
    uint64_t h = mix64(seed ^ 0x6a09e667f3bcc909ull);
    h = mix64(h ^ (uint64_t)step);
    return mix64(h ^ (uint64_t)sample);
}

int atom_data_open(atom_data *data, const char *path, atom_data_format format, int vocab,
                   int context, atom_err *err)
{
    memset(data, 0, sizeof *data);
    if (strlen(path) >= sizeof data->path)
        return atom_errf(err, "data file name too long: %s", path);
    if (context < 1 || vocab < 1)
        return atom_errf(err, "data %s: context %d and vocabulary %d must be positive", path,
                         context, vocab);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return atom_errf(err, "data %s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return atom_errf(err, "data %s: cannot stat: %s", path, strerror(e));
    }
    size_t token_bytes = format == ATOM_DATA_UINT16 ? 2 : 1;
    size_t bytes = (size_t)st.st_size;
    if (bytes % token_bytes != 0) {
        close(fd);
        return atom_errf(err, "data %s: %zu bytes is not a whole number of uint16 tokens", path,
                         bytes);
    }
    int64_t n = (int64_t)(bytes / token_bytes);
    if (n < (int64_t)context + 1) {
        close(fd);
        return atom_errf(err,
                         "data %s: %lld tokens, fewer than one sample of context+1 = %d tokens",
                         path, (long long)n, context + 1);
    }
    void *map = mmap(NULL, bytes, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd); /* the mapping keeps the file */
    if (map == MAP_FAILED)
        return atom_errf(err, "data %s: cannot map: %s", path, strerror(e));
    /* Samples are drawn at random offsets: read-ahead would only waste the page cache. */
    madvise(map, bytes, MADV_RANDOM);
    memcpy(data->path, path, strlen(path) + 1);
    data->format = format;
    data->map = map;
    data->map_bytes = bytes;
    data->n_tokens = n;
    data->context = context;
    data->vocab = vocab;
    return 0;
}

void atom_data_close(atom_data *data)
{
    if (data->map)
        munmap((void *)data->map, data->map_bytes);
    data->map = NULL;
}

int64_t atom_data_sample_offset(const atom_data *data, uint64_t seed, int64_t step,
                                int64_t sample)
{
    /* Offsets 0..N-T-1 inclusive: the last one still has T+1 tokens. The modulo's bias is
     * below range/2^64, far under anything a training run could notice. */
    uint64_t range = (uint64_t)(data->n_tokens - data->context);
    return (int64_t)(sample_hash(seed, step, sample) % range);
}

static int token_at(const atom_data *data, int64_t i)
{
    if (data->format == ATOM_DATA_UINT16) {
        const unsigned char *p = data->map + 2 * i;
        return (int)p[0] | (int)p[1] << 8;
    }
    return data->map[i];
}

int atom_data_read_span(const atom_data *data, int64_t offset, int count, int *tokens,
                        atom_err *err)
{
    int token_bytes = data->format == ATOM_DATA_UINT16 ? 2 : 1;
    if (offset < 0 || count < 0 || offset + count > data->n_tokens)
        return atom_errf(err, "data %s: tokens %lld..%lld are outside its %lld tokens",
                         data->path, (long long)offset, (long long)(offset + count - 1),
                         (long long)data->n_tokens);
    for (int t = 0; t < count; t++) {
        int tok = token_at(data, offset + t);
        if (tok >= data->vocab)
            return atom_errf(err, "data %s: token %d at token offset %lld (byte %lld) is "
                                  "not below the vocabulary size %d",
                             data->path, tok, (long long)(offset + t),
                             (long long)((offset + t) * token_bytes), data->vocab);
        tokens[t] = tok;
    }
    return 0;
}

int atom_data_read(const atom_data *data, uint64_t seed, int64_t step, int64_t first, int count,
                   int *tokens, atom_err *err)
{
    int T1 = data->context + 1;
    for (int b = 0; b < count; b++) {
        int64_t off = atom_data_sample_offset(data, seed, step, first + b);
        if (atom_data_read_span(data, off, T1, tokens + (size_t)b * T1, err) != 0)
            return -1;
    }
    return 0;
}
