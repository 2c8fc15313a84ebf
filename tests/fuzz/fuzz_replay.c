/* tests/fuzz/fuzz_replay.c: runs fuzz_spec.c's target over files and folders given on the command
 * line, without libFuzzer: the seed corpus (and every crash once saved there) is replayed by the
 * normal gcc build on every test run. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int replay_file(const char *path)
{
    atom_err err;
    size_t len;
    char *text = atom_read_file(path, 4 << 20, &len, &err);
    if (!text) {
        fprintf(stderr, "%s\n", err.msg);
        return -1;
    }
    LLVMFuzzerTestOneInput((const uint8_t *)text, len);
    free(text);
    return 0;
}

int main(int argc, char **argv)
{
    int files = 0, failed = 0;
    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) != 0) {
            fprintf(stderr, "%s: not found\n", argv[i]);
            return 1;
        }
        if (!S_ISDIR(st.st_mode)) {
            failed += replay_file(argv[i]) != 0;
            files++;
            continue;
        }
        DIR *dir = opendir(argv[i]);
        struct dirent *e;
        while (dir && (e = readdir(dir))) {
            if (e->d_name[0] == '.')
                continue;
            char path[4096];
            snprintf(path, sizeof path, "%s/%s", argv[i], e->d_name);
            failed += replay_file(path) != 0;
            files++;
        }
        if (dir)
            closedir(dir);
    }
    printf("replayed %d inputs, %d unreadable\n", files, failed);
    return files == 0 || failed ? 1 : 0;
}
