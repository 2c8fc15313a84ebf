/* common/safetensors.c: reading a safetensors file (Hugging Face's format; what `atomctl ckpt
 * export` writes): an 8-byte little-endian header length, a JSON header naming every tensor's
 * dtype, shape and [begin, end) byte offsets into the data that follows, then the raw
 * little-endian data. The header is parsed whole and checked (every tensor inside the file, its
 * byte count its shape's), so a reader of a tensor's elements only checks its own range. */
#include "common/common.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* A header larger than this is not a model's: refuse it rather than allocate it. */
#define ST_MAX_HEADER (100u << 20)

static int dtype_of(const char *name, int *bytes)
{
    if (strcmp(name, "F32") == 0) {
        *bytes = 4;
        return ATOM_ST_F32;
    }
    if (strcmp(name, "BF16") == 0) {
        *bytes = 2;
        return ATOM_ST_BF16;
    }
    if (strcmp(name, "F16") == 0) {
        *bytes = 2;
        return ATOM_ST_F16;
    }
    *bytes = 0;
    return -1;
}

static int read_full(int fd, void *buf, size_t len, uint64_t offset)
{
    size_t done = 0;
    while (done < len) {
        ssize_t n = pread(fd, (char *)buf + done, len - done, (off_t)(offset + done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        done += (size_t)n;
    }
    return 0;
}

/* One header entry into t; the message names the tensor. */
static int parse_entry(const char *path, const char *name, json_t *v, uint64_t data_bytes,
                       atom_st_tensor *t, atom_err *err)
{
    json_t *dtype = json_object_get(v, "dtype"), *shape = json_object_get(v, "shape");
    json_t *offs = json_object_get(v, "data_offsets");
    if (!json_is_string(dtype) || !json_is_array(shape) || !json_is_array(offs) ||
        json_array_size(offs) != 2)
        return atom_errf(err, "%s: tensor %s: the header entry needs dtype, shape and "
                              "data_offsets", path, name);
    if (strlen(name) >= sizeof t->name)
        return atom_errf(err, "%s: tensor name %.40s... is too long", path, name);
    snprintf(t->name, sizeof t->name, "%s", name);
    int bytes;
    t->dtype = dtype_of(json_string_value(dtype), &bytes);
    t->ndim = (int)json_array_size(shape);
    if (t->ndim > ATOM_ST_MAX_DIMS)
        return atom_errf(err, "%s: tensor %s has %d dims (at most %d)", path, name, t->ndim,
                         ATOM_ST_MAX_DIMS);
    uint64_t numel = 1;
    for (int d = 0; d < t->ndim; d++) {
        json_t *x = json_array_get(shape, (size_t)d);
        if (!json_is_integer(x) || json_integer_value(x) < 0 ||
            json_integer_value(x) > ((json_int_t)1 << 40))
            return atom_errf(err, "%s: tensor %s: dim %d of its shape is not a size", path, name,
                             d);
        t->shape[d] = json_integer_value(x);
        numel *= (uint64_t)t->shape[d];
        if (numel > ((uint64_t)1 << 40))
            return atom_errf(err, "%s: tensor %s is implausibly large", path, name);
    }
    t->numel = (int64_t)numel;
    json_t *b = json_array_get(offs, 0), *e = json_array_get(offs, 1);
    if (!json_is_integer(b) || !json_is_integer(e) || json_integer_value(b) < 0 ||
        json_integer_value(e) < json_integer_value(b) ||
        (uint64_t)json_integer_value(e) > data_bytes)
        return atom_errf(err, "%s: tensor %s: data_offsets are not inside the file's %llu bytes "
                              "of data (truncated?)", path, name, (unsigned long long)data_bytes);
    t->begin = (uint64_t)json_integer_value(b);
    t->end = (uint64_t)json_integer_value(e);
    /* an unknown dtype is only an error for a tensor someone reads (an int mask may sit there) */
    if (bytes && t->end - t->begin != numel * (uint64_t)bytes)
        return atom_errf(err, "%s: tensor %s: %llu bytes of data for %llu elements of %s", path,
                         name, (unsigned long long)(t->end - t->begin),
                         (unsigned long long)numel, json_string_value(dtype));
    snprintf(t->dtype_name, sizeof t->dtype_name, "%.15s", json_string_value(dtype));
    return 0;
}

int atom_safetensors_open(const char *path, atom_safetensors *st, atom_err *err)
{
    memset(st, 0, sizeof *st);
    st->fd = -1;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return atom_errf(err, "%s: %s", path, strerror(errno));
    struct stat sb;
    unsigned char le[8];
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode) || sb.st_size < 8 ||
        read_full(fd, le, 8, 0) != 0) {
        close(fd);
        return atom_errf(err, "%s is not a safetensors file (no 8-byte header length)", path);
    }
    uint64_t hlen = 0;
    for (int i = 0; i < 8; i++)
        hlen |= (uint64_t)le[i] << (8 * i);
    if (hlen < 2 || hlen > ST_MAX_HEADER || hlen > (uint64_t)sb.st_size - 8) {
        close(fd);
        return atom_errf(err, "%s: header length %llu does not fit a file of %lld bytes: not a "
                              "safetensors file, or truncated", path, (unsigned long long)hlen,
                         (long long)sb.st_size);
    }
    char *text = malloc(hlen);
    if (!text || read_full(fd, text, hlen, 8) != 0) {
        free(text);
        close(fd);
        return atom_errf(err, "%s: cannot read its header", path);
    }
    json_error_t jerr;
    json_t *root = json_loadb(text, hlen, JSON_REJECT_DUPLICATES, &jerr);
    free(text);
    if (!json_is_object(root)) {
        json_decref(root);
        close(fd);
        return atom_errf(err, "%s: the header is not a JSON object (%s)", path, jerr.text);
    }
    st->fd = fd;
    st->data_start = 8 + hlen;
    uint64_t data_bytes = (uint64_t)sb.st_size - st->data_start;
    st->tensors = calloc(json_object_size(root) + 1, sizeof *st->tensors);
    int rc = st->tensors ? 0 : atom_errf(err, "out of memory");
    const char *name;
    json_t *v;
    json_object_foreach(root, name, v) {
        if (rc != 0)
            break;
        if (strcmp(name, "__metadata__") == 0)
            continue;
        if (!json_is_object(v))
            rc = atom_errf(err, "%s: tensor %s: the header entry is not an object", path, name);
        else
            rc = parse_entry(path, name, v, data_bytes, &st->tensors[st->count++], err);
    }
    json_decref(root);
    if (rc != 0)
        atom_safetensors_close(st);
    return rc;
}

const atom_st_tensor *atom_safetensors_find(const atom_safetensors *st, const char *name)
{
    for (int i = 0; i < st->count; i++)
        if (strcmp(st->tensors[i].name, name) == 0)
            return &st->tensors[i];
    return NULL;
}

/* IEEE half to float, exactly (every half is a float). */
static float half_to_float(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | man << 13;
    } else if (exp != 0) {
        bits = sign | (exp + 112) << 23 | man << 13;
    } else if (man == 0) {
        bits = sign;
    } else { /* subnormal: normalise */
        int e = -1;
        do {
            man <<= 1;
            e++;
        } while (!(man & 0x400));
        bits = sign | (uint32_t)(112 - e) << 23 | (man & 0x3ff) << 13;
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

int atom_safetensors_read(const atom_safetensors *st, const atom_st_tensor *t, int64_t first,
                          int64_t count, float *out, atom_err *err)
{
    int bytes;
    if (t->dtype < 0 || dtype_of(t->dtype_name, &bytes) < 0)
        return atom_errf(err, "tensor %s has dtype %s; atom reads F32, BF16 and F16", t->name,
                         t->dtype_name);
    if (first < 0 || count < 0 || first + count > t->numel)
        return atom_errf(err, "tensor %s: elements [%lld, %lld) are outside its %lld", t->name,
                         (long long)first, (long long)(first + count), (long long)t->numel);
    size_t len = (size_t)count * (size_t)bytes;
    uint64_t at = st->data_start + t->begin + (uint64_t)first * (uint64_t)bytes;
    /* F32 lands in place; the 2-byte types in the upper half of out, widened upwards in order */
    unsigned char *raw = (unsigned char *)out + (bytes == 4 ? 0 : (size_t)count * 2);
    if (read_full(st->fd, raw, len, at) != 0)
        return atom_errf(err, "tensor %s: cannot read its data (truncated file?)", t->name);
    for (int64_t i = 0; i < count && bytes == 2; i++) {
        uint16_t h = (uint16_t)(raw[2 * i] | raw[2 * i + 1] << 8);
        if (t->dtype == ATOM_ST_BF16) {
            uint32_t bits = (uint32_t)h << 16;
            memcpy(&out[i], &bits, sizeof bits);
        } else {
            out[i] = half_to_float(h);
        }
    }
    return 0;
}

void atom_safetensors_close(atom_safetensors *st)
{
    if (st->fd >= 0)
        close(st->fd);
    free(st->tensors);
    memset(st, 0, sizeof *st);
    st->fd = -1;
}
