/* checkpoints/ckpt_info.c: a checkpoint's metadata and model shape, read without MPI, for the
 * tools that describe a checkpoint to another program (export's config.json). */
#include "checkpoints/ckpt_internal.h"

#include <string.h>

/* The global dims of /param/NAME, or -1 naming the dataset. */
static int param_dims(hid_t file, const char *name, int want, hsize_t *dims, atom_ckpt_err *err) {
    char dname[64];
    snprintf(dname, sizeof dname, "/param/%s", name);
    hid_t ds = H5Dopen2(file, dname, H5P_DEFAULT);
    if (ds < 0) {
        return ckpt_h5_errf(err, "dataset %s is missing", dname);
    }
    hid_t space = H5Dget_space(ds);
    int nd = H5Sget_simple_extent_ndims(space);
    if (nd == want) {
        H5Sget_simple_extent_dims(space, dims, NULL);
    }
    H5Sclose(space);
    H5Dclose(ds);
    return nd == want ? 0 : ckpt_errf(err, "dataset %s has %d dims, %d expected", dname, nd, want);
}

int ckpt_read_shape(hid_t file, atom_ckpt_shape *shape, atom_ckpt_err *err) {
    hsize_t d[3];
    int rc = param_dims(file, "qkvw", 3, d, err);
    if (rc == 0) {
        shape->layers = (int64_t)d[0];
        shape->channels = (int64_t)d[2];
    }
    if (rc == 0 && (rc = param_dims(file, "wte", 2, d, err)) == 0) {
        shape->padded_vocab = (int64_t)d[0];
    }
    if (rc == 0 && (rc = param_dims(file, "wpe", 2, d, err)) == 0) {
        shape->context = (int64_t)d[0];
    }
    return rc;
}

int atom_ckpt_read_info(const char *path, atom_ckpt_meta *meta, atom_ckpt_shape *shape,
                        atom_ckpt_err *err) {
    ckpt_h5_quiet();
    memset(shape, 0, sizeof *shape);
    hid_t file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (file < 0) {
        return ckpt_h5_errf(err, "cannot open checkpoint %s (missing, truncated or not HDF5)",
                            path);
    }
    int rc = ckpt_read_meta(file, meta, err);
    if (rc == 0)
        rc = ckpt_read_shape(file, shape, err);
    if (rc != 0) {
        atom_ckpt_meta_free(meta);
    }
    H5Fclose(file);
    return rc;
}
