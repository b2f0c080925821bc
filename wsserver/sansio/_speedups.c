/*
 * Optional C speed-up for wsserver.sansio.masking (RFC 6455, section 5.3).
 *
 * Built at install time when a C compiler is available; wsserver falls back to
 * the pure-Python apply_mask_python() otherwise, so this module must behave
 * exactly like it.
 *
 * Written against the full C API rather than the limited one: Py_buffer only
 * joined the limited API in 3.11 and wsserver supports 3.10.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>

#define MASK_BYTES 4

/*
 * XOR `length` bytes of `src` into `dst` with the 4-byte `mask` repeated.
 *
 * The bulk goes 32 bytes per iteration as four independent 64-bit words: on
 * gcc 12 (x86-64) this measured as fast as hand-written SSE2 for 1 MiB inputs
 * and faster for frame-sized ones, while staying portable C. memcpy does the
 * unaligned loads and stores; compilers turn it into plain moves.
 *
 * Every chunk starts at a multiple of 8, so the 8-byte mask word stays in phase
 * with the data and the byte tail picks up at mask[i % 4].
 */
static void
xor_with_mask(const unsigned char *src, unsigned char *dst, size_t length,
              const unsigned char mask[MASK_BYTES])
{
    unsigned char mask_bytes[8];
    uint64_t mask_word;
    size_t i = 0;

    memcpy(mask_bytes, mask, MASK_BYTES);
    memcpy(mask_bytes + MASK_BYTES, mask, MASK_BYTES);
    memcpy(&mask_word, mask_bytes, sizeof mask_word);

    for (; i + 32 <= length; i += 32) {
        uint64_t a, b, c, d;
        memcpy(&a, src + i, 8);
        memcpy(&b, src + i + 8, 8);
        memcpy(&c, src + i + 16, 8);
        memcpy(&d, src + i + 24, 8);
        a ^= mask_word;
        b ^= mask_word;
        c ^= mask_word;
        d ^= mask_word;
        memcpy(dst + i, &a, 8);
        memcpy(dst + i + 8, &b, 8);
        memcpy(dst + i + 16, &c, 8);
        memcpy(dst + i + 24, &d, 8);
    }
    for (; i + 8 <= length; i += 8) {
        uint64_t word;
        memcpy(&word, src + i, 8);
        word ^= mask_word;
        memcpy(dst + i, &word, 8);
    }
    for (; i < length; i++) {
        dst[i] = src[i] ^ mask[i & (MASK_BYTES - 1)];
    }
}

PyDoc_STRVAR(apply_mask_doc,
"apply_mask(data, mask, /)\n"
"--\n"
"\n"
"XOR data with the 4-byte mask repeated; masking and unmasking alike.\n"
"\n"
":param data: any bytes-like object, contiguous or not.\n"
":param mask: a bytes-like object of exactly 4 bytes.\n"
":returns: a new bytes object as long as data.\n"
":raises TypeError: if data or mask does not support the buffer protocol.\n"
":raises BufferError: if mask is not contiguous.\n"
":raises ValueError: if mask is not 4 bytes long.\n");

static PyObject *
apply_mask(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer data, mask;
    PyObject *result = NULL;
    unsigned char *out;

    (void)module;
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError,
                     "apply_mask() takes exactly 2 arguments (%zd given)", nargs);
        return NULL;
    }
    /* The mask is checked first, as apply_mask_python() does. */
    if (PyObject_GetBuffer(args[1], &mask, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    if (mask.len != MASK_BYTES) {
        PyErr_SetString(PyExc_ValueError, "mask must contain 4 bytes");
        goto release_mask;
    }
    /* Strided requests so that sliced memoryviews work, as in Python. */
    if (PyObject_GetBuffer(args[0], &data, PyBUF_FULL_RO) < 0) {
        goto release_mask;
    }
    result = PyBytes_FromStringAndSize(NULL, data.len);
    if (result == NULL) {
        goto release_data;
    }
    out = (unsigned char *)PyBytes_AS_STRING(result);
    if (PyBuffer_IsContiguous(&data, 'C')) {
        xor_with_mask((const unsigned char *)data.buf, out, (size_t)data.len,
                      (const unsigned char *)mask.buf);
    }
    else if (PyBuffer_ToContiguous(out, &data, data.len, 'C') == 0) {
        /* Rare path: gather first, then XOR in place. */
        xor_with_mask(out, out, (size_t)data.len,
                      (const unsigned char *)mask.buf);
    }
    else {
        Py_CLEAR(result);
    }
release_data:
    PyBuffer_Release(&data);
release_mask:
    PyBuffer_Release(&mask);
    return result;
}

static PyMethodDef speedups_methods[] = {
    {"apply_mask", (PyCFunction)(void (*)(void))apply_mask, METH_FASTCALL,
     apply_mask_doc},
    {NULL, NULL, 0, NULL},
};

static PyModuleDef_Slot speedups_slots[] = {
#ifdef Py_mod_gil
    /* No module state and no Python objects shared between calls. */
    {Py_mod_gil, Py_MOD_GIL_NOT_USED},
#endif
    {0, NULL},
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "wsserver.sansio._speedups",
    .m_doc = "C implementation of wsserver.sansio.masking.apply_mask.",
    .m_size = 0,
    .m_methods = speedups_methods,
    .m_slots = speedups_slots,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModuleDef_Init(&speedups_module);
}
