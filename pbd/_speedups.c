/*
 * pbd._speedups: Banana decoding and encoding, and plain data's jelly, in C;
 * optional.
 *
 * The same loops as pbd/banana.py (FastDecoding.dataReceived) and
 * pbd/encoder.py (encode_into), which stay the reference and the fallback:
 * pip builds this module when a C compiler is there, and pbd uses it unless
 * PBD_PURE_PYTHON is set. Neither function makes up an error message of its
 * own. The decoder reports what went wrong as a code and Python raises
 * Twisted's words; the encoder gives up (returns None) on anything but the
 * exact types it knows, and Python encodes that message instead, raising
 * what Twisted raises. tests/test_codec_differential.py and
 * tests/test_banana_unit.py run against both.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

enum {
    LIST = 0x80, INT = 0x81, STRING = 0x82, NEG = 0x83,
    FLOAT = 0x84, LONGINT = 0x85, LONGNEG = 0x86, VOCAB = 0x87,
};

/* What decode() returns: how it stopped. */
enum {
    DONE = 0,             /* all decoded, or an item waits for more bytes */
    PREFIX_TOO_LONG = 1,
    STRING_TOO_LONG = 2,
    LIST_TOO_LONG = 3,
    NESTED_TOO_DEEP = 4,
    TOO_MANY_ITEMS = 5,
    TOO_MANY_BYTES = 6,
    VOCAB_OUTSIDE_PB = 7, /* state[3]: the vocabulary number */
    BAD_TYPE_BYTE = 8,    /* state[3]: the type byte */
};

static PyObject *str_currentDialect;
static PyObject *bytes_pb;

/* The prefix [start, stop) as a Python int, least significant digit first. */
static PyObject *
prefix_number(const unsigned char *start, const unsigned char *stop)
{
    Py_ssize_t digits = stop - start;
    if (digits <= 9) {
        unsigned long long number = 0;
        for (Py_ssize_t i = 0; i < digits; i++)
            number |= (unsigned long long)start[i] << (7 * i);
        return PyLong_FromUnsignedLongLong(number);
    }
    /* Longer prefixes (up to the prefix limit): rare, so in Python ints. */
    PyObject *number = PyLong_FromLong(0);
    for (Py_ssize_t i = digits - 1; number != NULL && i >= 0; i--) {
        PyObject *seven = PyLong_FromLong(7), *digit = PyLong_FromLong(start[i]);
        PyObject *shifted = seven ? PyNumber_Lshift(number, seven) : NULL;
        Py_XDECREF(seven);
        Py_SETREF(number, shifted && digit ? PyNumber_Or(shifted, digit) : NULL);
        Py_XDECREF(shifted);
        Py_XDECREF(digit);
    }
    return number;
}

static int
store_state(PyObject *state, Py_ssize_t position, Py_ssize_t held_items,
            Py_ssize_t held_bytes, Py_ssize_t detail)
{
    Py_ssize_t values[4] = {position, held_items, held_bytes, detail};
    for (int i = 0; i < 4; i++) {
        PyObject *number = PyLong_FromSsize_t(values[i]);
        if (number == NULL)
            return -1;
        if (PyList_SetItem(state, i, number) < 0)
            return -1;
    }
    return 0;
}

static int
dialect_is_pb(PyObject *protocol)
{
    PyObject *dialect = PyObject_GetAttr(protocol, str_currentDialect);
    if (dialect == NULL)
        return -1;
    int is_pb = PyObject_RichCompareBool(dialect, bytes_pb, Py_EQ);
    Py_DECREF(dialect);
    return is_pb;
}

/*
 * decode(buffer, state, list_stack, protocol, vocabulary, deliver,
 *        prefix_limit, size_limit, max_nesting, max_items, max_bytes) -> int
 *
 * state is [position, held_items, held_bytes, detail], read at the start
 * and written back however decode() ends, an exception included. A
 * max_nesting below 0 means the message bounds are off. Completed
 * top-level items go to deliver(item); lists being filled are
 * (expected, items) tuples on list_stack, as in pbd/banana.py.
 */
static PyObject *
decode(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 11) {
        PyErr_SetString(PyExc_TypeError, "decode() takes 11 arguments");
        return NULL;
    }
    PyObject *buffer_object = args[0], *state = args[1], *list_stack = args[2];
    PyObject *protocol = args[3], *vocabulary = args[4], *deliver = args[5];
    if (!PyBytes_CheckExact(buffer_object) || !PyList_CheckExact(state)
        || PyList_GET_SIZE(state) != 4 || !PyList_CheckExact(list_stack)
        || !PyDict_Check(vocabulary)) {
        PyErr_SetString(PyExc_TypeError, "decode(): bad arguments");
        return NULL;
    }
    Py_ssize_t prefix_limit = PyLong_AsSsize_t(args[6]);
    Py_ssize_t size_limit = PyLong_AsSsize_t(args[7]);
    Py_ssize_t max_nesting = PyLong_AsSsize_t(args[8]);
    Py_ssize_t max_items = PyLong_AsSsize_t(args[9]);
    Py_ssize_t max_bytes = PyLong_AsSsize_t(args[10]);
    Py_ssize_t position = PyLong_AsSsize_t(PyList_GET_ITEM(state, 0));
    Py_ssize_t held_items = PyLong_AsSsize_t(PyList_GET_ITEM(state, 1));
    Py_ssize_t held_bytes = PyLong_AsSsize_t(PyList_GET_ITEM(state, 2));
    if (PyErr_Occurred())
        return NULL;
    int bounded = max_nesting >= 0;

    /* The buffer is immutable and held by the caller throughout. */
    const unsigned char *buffer = (const unsigned char *)PyBytes_AS_STRING(buffer_object);
    Py_ssize_t end = PyBytes_GET_SIZE(buffer_object);
    int outcome = DONE;
    Py_ssize_t detail = 0;
    PyObject *item = NULL;

    while (position < end) {
        Py_ssize_t scan_end = position + prefix_limit + 1;
        if (scan_end > end)
            scan_end = end;
        Py_ssize_t type_at = position;
        while (type_at < scan_end && buffer[type_at] < 0x80)
            type_at++;
        if (type_at == scan_end) {
            if (end - position > prefix_limit)
                outcome = PREFIX_TOO_LONG;
            break;
        }
        unsigned char type_byte = buffer[type_at];
        Py_ssize_t rest = type_at + 1;
        Py_ssize_t digits = type_at - position;
        /* Lengths and counts: the first 9 digits (63 bits); a number with a
           non-zero digit past them does not fit, and is over any limit. */
        unsigned long long number = 0;
        int past_63_bits = 0;
        for (Py_ssize_t i = 0; i < digits; i++) {
            unsigned long long digit = buffer[position + i];
            if (i < 9)
                number |= digit << (7 * i);
            else if (digit)
                past_63_bits = 1;
        }
        Py_ssize_t size = past_63_bits || number > (unsigned long long)PY_SSIZE_T_MAX
                              ? -1
                              : (Py_ssize_t)number;
        int over_size_limit = size < 0 || size > size_limit;

        if (bounded) {
            if (type_byte == LIST && PyList_GET_SIZE(list_stack) >= max_nesting) {
                outcome = NESTED_TOO_DEEP;
                break;
            }
            held_items++;
            if (type_byte == STRING && !over_size_limit)
                held_bytes += size;
            if (held_items > max_items) {
                outcome = TOO_MANY_ITEMS;
                break;
            }
            if (held_bytes > max_bytes) {
                outcome = TOO_MANY_BYTES;
                break;
            }
        }

        switch (type_byte) {
        case STRING:
            if (over_size_limit) {
                outcome = STRING_TOO_LONG;
                goto stop;
            }
            if (end - rest < size) {
                detail = rest + size - position; /* the bytes this item awaits */
                if (bounded) {
                    held_items--;
                    held_bytes -= size;
                }
                goto stop;
            }
            item = PyBytes_FromStringAndSize((const char *)buffer + rest, size);
            if (item == NULL)
                goto fail;
            position = rest + size;
            break;
        case LIST: {
            if (over_size_limit) {
                outcome = LIST_TOO_LONG;
                goto stop;
            }
            PyObject *items = PyList_New(0);
            if (items == NULL)
                goto fail;
            PyObject *entry = Py_BuildValue("(nN)", size, items);
            if (entry == NULL)
                goto fail;
            int appended = PyList_Append(list_stack, entry);
            Py_DECREF(entry);
            if (appended < 0)
                goto fail;
            position = rest;
            if (size)
                continue;
            /* An empty list is complete at once. */
            Py_ssize_t top = PyList_GET_SIZE(list_stack) - 1;
            item = Py_NewRef(PyTuple_GET_ITEM(PyList_GET_ITEM(list_stack, top), 1));
            if (PyList_SetSlice(list_stack, top, top + 1, NULL) < 0)
                goto fail;
            break;
        }
        case VOCAB: {
            PyObject *number = prefix_number(buffer + position, buffer + type_at);
            position = rest;
            if (number == NULL)
                goto fail;
            PyObject *word = PyDict_GetItemWithError(vocabulary, number);
            if (word == NULL) {
                if (!PyErr_Occurred())
                    PyErr_SetObject(PyExc_KeyError, number);
                Py_DECREF(number);
                goto fail;
            }
            Py_DECREF(number);
            item = Py_NewRef(word); /* held: the dialect's lookup runs Python code */
            int is_pb = dialect_is_pb(protocol);
            if (is_pb < 0)
                goto fail;
            if (!is_pb) {
                Py_CLEAR(item);
                outcome = VOCAB_OUTSIDE_PB;
                detail = size; /* a number the vocabulary knows: small */
                goto stop;
            }
            break;
        }
        case INT:
        case LONGINT:
        case NEG:
        case LONGNEG: {
            item = prefix_number(buffer + position, buffer + type_at);
            if (item == NULL)
                goto fail;
            position = rest;
            if (type_byte == NEG || type_byte == LONGNEG) {
                PyObject *negative = PyNumber_Negative(item);
                Py_SETREF(item, negative);
                if (item == NULL)
                    goto fail;
            }
            break;
        }
        case FLOAT: {
            if (end - rest < 8) {
                if (bounded) /* counted again when the whole float is here */
                    held_items--;
                goto stop;
            }
            double value = PyFloat_Unpack8((const char *)buffer + rest, 0);
            if (value == -1.0 && PyErr_Occurred())
                goto fail;
            item = PyFloat_FromDouble(value);
            if (item == NULL)
                goto fail;
            position = rest + 8;
            break;
        }
        default:
            outcome = BAD_TYPE_BYTE;
            detail = type_byte;
            goto stop;
        }

        /* Deliver the item, and every list it completes. */
        for (;;) {
            Py_ssize_t depth = PyList_GET_SIZE(list_stack);
            if (depth == 0) {
                PyObject *result = PyObject_CallOneArg(deliver, item);
                Py_CLEAR(item);
                if (result == NULL)
                    goto fail;
                Py_DECREF(result);
                break;
            }
            PyObject *top = PyList_GET_ITEM(list_stack, depth - 1);
            if (!PyTuple_CheckExact(top) || PyTuple_GET_SIZE(top) != 2
                || !PyList_CheckExact(PyTuple_GET_ITEM(top, 1))) {
                PyErr_SetString(PyExc_TypeError, "decode(): list_stack holds (count, list) pairs");
                goto fail;
            }
            PyObject *items = PyTuple_GET_ITEM(top, 1);
            if (PyList_Append(items, item) < 0)
                goto fail;
            Py_CLEAR(item);
            Py_ssize_t expected = PyLong_AsSsize_t(PyTuple_GET_ITEM(top, 0));
            if (PyList_GET_SIZE(items) != expected)
                break;
            item = Py_NewRef(items);
            if (PyList_SetSlice(list_stack, depth - 1, depth, NULL) < 0)
                goto fail;
        }
        if (bounded && PyList_GET_SIZE(list_stack) == 0)
            held_items = held_bytes = 0;
    }
stop:
    if (store_state(state, position, held_items, held_bytes, detail) < 0)
        return NULL;
    return PyLong_FromLong(outcome);
fail:
    Py_XDECREF(item);
    {
        PyObject *type, *value, *traceback;
        PyErr_Fetch(&type, &value, &traceback);
        if (store_state(state, position, held_items, held_bytes, 0) < 0) {
            Py_XDECREF(type);
            Py_XDECREF(value);
            Py_XDECREF(traceback);
            return NULL;
        }
        PyErr_Restore(type, value, traceback);
    }
    return NULL;
}

/* Encoding: first the size, then the bytes, into one bytes object. */

typedef struct {
    PyObject *symbols;   /* dict of bytes -> int, or NULL */
    Py_ssize_t size_limit;
    int depth;
} Encoding;

#define MAX_DEPTH 200
/* Ints in this range need no check against any prefix limit's bound. */
#define INT_LIMIT ((1LL << 62) - 1)

static Py_ssize_t
b128_length(unsigned long long number)
{
    Py_ssize_t length = 1;
    while (number >>= 7)
        length++;
    return length;
}

static unsigned char *
put_b128(unsigned char *out, unsigned long long number)
{
    do {
        *out++ = number & 0x7f;
        number >>= 7;
    } while (number);
    return out;
}

/* The size of item's encoding; -1 to give up (Python encodes it), -2 on error. */
static Py_ssize_t
encoded_size(Encoding *encoding, PyObject *item)
{
    PyTypeObject *kind = Py_TYPE(item);
    if (kind == &PyBytes_Type) {
        if (encoding->symbols != NULL) {
            PyObject *number = PyDict_GetItemWithError(encoding->symbols, item);
            if (number != NULL) {
                long long value = PyLong_AsLongLong(number);
                if (value < 0 || value > INT_LIMIT)
                    return PyErr_Occurred() ? -2 : -1;
                return b128_length(value) + 1;
            }
            if (PyErr_Occurred())
                return -2;
        }
        Py_ssize_t size = PyBytes_GET_SIZE(item);
        if (size > encoding->size_limit)
            return -1;
        return b128_length(size) + 1 + size;
    }
    if (kind == &PyList_Type || kind == &PyTuple_Type) {
        Py_ssize_t count = Py_SIZE(item);
        if (count > encoding->size_limit || encoding->depth >= MAX_DEPTH)
            return -1;
        PyObject **elements = kind == &PyList_Type ? ((PyListObject *)item)->ob_item
                                                   : ((PyTupleObject *)item)->ob_item;
        Py_ssize_t total = b128_length(count) + 1;
        encoding->depth++;
        for (Py_ssize_t i = 0; i < count; i++) {
            Py_ssize_t size = encoded_size(encoding, elements[i]);
            if (size < 0) {
                encoding->depth--;
                return size;
            }
            total += size;
        }
        encoding->depth--;
        return total;
    }
    if (kind == &PyLong_Type) {
        int overflow;
        long long value = PyLong_AsLongLongAndOverflow(item, &overflow);
        if (overflow || value > INT_LIMIT || value < -INT_LIMIT)
            return -1;
        return b128_length(value < 0 ? -value : value) + 1;
    }
    if (kind == &PyFloat_Type)
        return 9;
    return -1;
}

/*
 * Write item's encoding at out, up to end; NULL where it does not fit or
 * is no longer what encoded_size measured. Nothing here allocates or runs
 * Python code, but the allocation between the two passes may have (a
 * collection's finalizers): a value changed meanwhile is left to Python.
 */
static unsigned char *
put_item(Encoding *encoding, PyObject *item, unsigned char *out, unsigned char *end)
{
    PyTypeObject *kind = Py_TYPE(item);
    if (kind == &PyBytes_Type) {
        if (encoding->symbols != NULL) {
            PyObject *number = PyDict_GetItemWithError(encoding->symbols, item);
            if (number != NULL) {
                long long value = PyLong_AsLongLong(number);
                if (value < 0 || value > INT_LIMIT || end - out < b128_length(value) + 1)
                    return NULL;
                out = put_b128(out, value);
                *out++ = VOCAB;
                return out;
            }
            if (PyErr_Occurred())
                return NULL;
        }
        Py_ssize_t size = PyBytes_GET_SIZE(item);
        if (size > encoding->size_limit || end - out < b128_length(size) + 1 + size)
            return NULL;
        out = put_b128(out, size);
        *out++ = STRING;
        memcpy(out, PyBytes_AS_STRING(item), size);
        return out + size;
    }
    if (kind == &PyList_Type || kind == &PyTuple_Type) {
        Py_ssize_t count = Py_SIZE(item);
        if (count > encoding->size_limit || end - out < b128_length(count) + 1)
            return NULL;
        out = put_b128(out, count);
        *out++ = LIST;
        for (Py_ssize_t i = 0; i < count && out != NULL; i++) {
            if (Py_SIZE(item) != count)
                return NULL;
            PyObject *element = kind == &PyList_Type ? PyList_GET_ITEM(item, i)
                                                     : PyTuple_GET_ITEM(item, i);
            out = put_item(encoding, element, out, end);
        }
        return out;
    }
    if (kind == &PyLong_Type) {
        int overflow;
        long long value = PyLong_AsLongLongAndOverflow(item, &overflow);
        if (overflow || value > INT_LIMIT || value < -INT_LIMIT)
            return NULL;
        unsigned long long magnitude = value < 0 ? -value : value;
        if (end - out < b128_length(magnitude) + 1)
            return NULL;
        out = put_b128(out, magnitude);
        if (value >= 0)
            *out++ = value <= 0x7fffffffLL ? INT : LONGINT;
        else
            *out++ = value >= -0x80000000LL ? NEG : LONGNEG;
        return out;
    }
    if (kind == &PyFloat_Type) {
        if (end - out < 9)
            return NULL;
        *out++ = FLOAT;
        PyFloat_Pack8(PyFloat_AS_DOUBLE(item), (char *)out, 0);
        return out + 8;
    }
    return NULL;
}

/*
 * encode(item, symbols, size_limit) -> bytes, or None where Python must
 * encode the message (a type, size or int it leaves to Python).
 */
static PyObject *
encode(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "encode() takes 3 arguments");
        return NULL;
    }
    Encoding encoding = {NULL, 0, 0};
    if (args[1] != Py_None) {
        if (!PyDict_Check(args[1])) {
            PyErr_SetString(PyExc_TypeError, "encode(): symbols must be a dict or None");
            return NULL;
        }
        encoding.symbols = args[1];
    }
    encoding.size_limit = PyLong_AsSsize_t(args[2]);
    if (encoding.size_limit == -1 && PyErr_Occurred())
        return NULL;
    Py_ssize_t size = encoded_size(&encoding, args[0]);
    if (size == -2)
        return NULL;
    if (size == -1)
        Py_RETURN_NONE;
    PyObject *result = PyBytes_FromStringAndSize(NULL, size);
    if (result == NULL)
        return NULL;
    unsigned char *start = (unsigned char *)PyBytes_AS_STRING(result);
    unsigned char *stop = put_item(&encoding, args[0], start, start + size);
    if (stop == NULL || stop - start != size) {
        /* Changed between the passes (or an error): Python encodes it. */
        Py_DECREF(result);
        if (PyErr_Occurred())
            return NULL;
        Py_RETURN_NONE;
    }
    return result;
}


/*
 * Plain data both ways, as pbd/plainjelly.py does (its reference and
 * fallback): strings, numbers, None, booleans, and lists, tuples and dicts
 * of them. Anything else, a container met twice, or nesting past MAX_DEPTH
 * gives NOT_PLAIN, and Twisted's Jelly does the whole value instead.
 */

static PyObject *not_plain;  /* the sentinel */
static PyObject *tag_none, *tag_unicode, *tag_boolean, *tag_list, *tag_tuple,
    *tag_dictionary, *word_true, *word_false;

static PyObject *
jellied(PyObject *value, PyObject **seen, int depth);

/* 1: first meeting of this container; 0: met before (or too deep); -1: error. */
static int
first_meeting(PyObject *container, PyObject **seen, int depth)
{
    if (depth >= MAX_DEPTH)
        return 0;
    if (*seen == NULL && (*seen = PySet_New(NULL)) == NULL)
        return -1;
    PyObject *key = PyLong_FromVoidPtr(container);
    if (key == NULL)
        return -1;
    int met = PySet_Contains(*seen, key);
    if (met == 0)
        met = PySet_Add(*seen, key) < 0 ? -1 : 0;
    Py_DECREF(key);
    return met < 0 ? -1 : !met;
}

/*
 * [tag, *children], children jellied; NULL on error, not_plain if not
 * plain. Jellying a child allocates, and an allocation may run Python code
 * (a collection's finalizers) that changes the container: each child is
 * read afresh and held while it is jellied, and a container whose size
 * changed is left to Jelly.
 */
static PyObject *
jellied_sequence(PyObject *tag, PyObject *container, PyObject **seen, int depth)
{
    int is_list = PyList_CheckExact(container);
    Py_ssize_t count = Py_SIZE(container);
    PyObject *sexp = PyList_New(count + 1);
    if (sexp == NULL)
        return NULL;
    PyList_SET_ITEM(sexp, 0, Py_NewRef(tag));
    for (Py_ssize_t i = 0; i < count; i++) {
        if (Py_SIZE(container) != count) {
            Py_DECREF(sexp);
            return Py_NewRef(not_plain);
        }
        PyObject *element = Py_NewRef(is_list ? PyList_GET_ITEM(container, i)
                                              : PyTuple_GET_ITEM(container, i));
        PyObject *child = jellied(element, seen, depth + 1);
        Py_DECREF(element);
        if (child == NULL || child == not_plain) {
            Py_DECREF(sexp);
            return child;
        }
        PyList_SET_ITEM(sexp, i + 1, child);
    }
    return sexp;
}

static PyObject *
jellied(PyObject *value, PyObject **seen, int depth)
{
    PyTypeObject *kind = Py_TYPE(value);
    if (kind == &PyUnicode_Type) {
        PyObject *encoded = PyUnicode_AsUTF8String(value);
        if (encoded == NULL)
            return NULL;
        return Py_BuildValue("[ON]", tag_unicode, encoded);
    }
    if (kind == &PyLong_Type || kind == &PyBytes_Type || kind == &PyFloat_Type)
        return Py_NewRef(value);
    if (kind == &PyList_Type || kind == &PyTuple_Type || kind == &PyDict_Type) {
        int first = first_meeting(value, seen, depth);
        if (first <= 0)
            return first < 0 ? NULL : Py_NewRef(not_plain);
        if (kind == &PyList_Type)
            return jellied_sequence(tag_list, value, seen, depth);
        if (kind == &PyTuple_Type)
            return jellied_sequence(tag_tuple, value, seen, depth);
        PyObject *sexp = PyList_New(1);
        if (sexp == NULL)
            return NULL;
        PyList_SET_ITEM(sexp, 0, Py_NewRef(tag_dictionary));
        Py_ssize_t position = 0, size = PyDict_GET_SIZE(value);
        PyObject *key, *item;
        while (PyDict_Next(value, &position, &key, &item)) {
            /* Held, and the size checked, as for lists (jellied_sequence). */
            PyObject *pair[2] = {Py_NewRef(key), Py_NewRef(item)};
            PyObject *jellied_pair = PyList_New(2);
            for (int i = 0; i < 2 && jellied_pair != NULL; i++) {
                PyObject *child = jellied(pair[i], seen, depth + 1);
                if (child == NULL || child == not_plain || PyDict_GET_SIZE(value) != size) {
                    Py_DECREF(jellied_pair);
                    jellied_pair = child == NULL ? NULL : Py_NewRef(not_plain);
                    Py_XDECREF(child);
                    break;
                }
                PyList_SET_ITEM(jellied_pair, i, child);
            }
            Py_DECREF(pair[0]);
            Py_DECREF(pair[1]);
            if (jellied_pair == NULL || jellied_pair == not_plain) {
                Py_DECREF(sexp);
                return jellied_pair;
            }
            int appended = PyList_Append(sexp, jellied_pair);
            Py_DECREF(jellied_pair);
            if (appended < 0) {
                Py_DECREF(sexp);
                return NULL;
            }
        }
        return sexp;
    }
    if (value == Py_None)
        return Py_BuildValue("[O]", tag_none);
    if (kind == &PyBool_Type)
        return Py_BuildValue("[OO]", tag_boolean, value == Py_True ? word_true : word_false);
    return Py_NewRef(not_plain);
}

/* jelly_plain(value) -> the s-expression of plain data, or NOT_PLAIN. */
static PyObject *
jelly_plain(PyObject *module, PyObject *value)
{
    PyObject *seen = NULL;
    PyObject *sexp = jellied(value, &seen, 0);
    Py_XDECREF(seen);
    return sexp;
}

typedef struct {
    PyObject *allowed, *registry, *factories;
} Unjelly;

static int
is_word(PyObject *object, PyObject *word)
{
    return PyBytes_CheckExact(object) && PyBytes_GET_SIZE(object) == PyBytes_GET_SIZE(word)
           && memcmp(PyBytes_AS_STRING(object), PyBytes_AS_STRING(word),
                     PyBytes_GET_SIZE(word)) == 0;
}

static PyObject *
unjellied(Unjelly *rules, PyObject *sexp, int depth);

/* The unjellied items of sexp[1:], in a new list; NULL or not_plain as ever. */
static PyObject *
unjellied_items(Unjelly *rules, PyObject *sexp, int depth)
{
    Py_ssize_t count = PyList_GET_SIZE(sexp) - 1;
    PyObject *items = PyList_New(count);
    if (items == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < count; i++) {
        /* Held, and the size checked, as in jellied_sequence. */
        if (PyList_GET_SIZE(sexp) != count + 1) {
            Py_DECREF(items);
            return Py_NewRef(not_plain);
        }
        PyObject *element = Py_NewRef(PyList_GET_ITEM(sexp, i + 1));
        PyObject *item = unjellied(rules, element, depth + 1);
        Py_DECREF(element);
        if (item == NULL || item == not_plain) {
            Py_DECREF(items);
            return item;
        }
        PyList_SET_ITEM(items, i, item);
    }
    return items;
}

static PyObject *
unjellied(Unjelly *rules, PyObject *sexp, int depth)
{
    if (!PyList_CheckExact(sexp))
        return Py_NewRef(sexp);
    Py_ssize_t length = PyList_GET_SIZE(sexp);
    if (length == 0 || depth >= MAX_DEPTH)
        return Py_NewRef(not_plain);
    PyObject *tag = PyList_GET_ITEM(sexp, 0);
    int found = PyDict_Contains(rules->allowed, tag);
    if (found == 1) {
        found = PyDict_Contains(rules->registry, tag);
        if (found == 0)
            found = PyDict_Contains(rules->factories, tag);
        found = found < 0 ? -1 : !found;
    }
    if (found <= 0)
        return found < 0 ? NULL : Py_NewRef(not_plain);
    if (is_word(tag, tag_unicode)) {
        PyObject *text = length == 2 ? PyList_GET_ITEM(sexp, 1) : NULL;
        if (text == NULL || !PyBytes_CheckExact(text))
            return Py_NewRef(not_plain);
        return PyUnicode_DecodeUTF8(PyBytes_AS_STRING(text), PyBytes_GET_SIZE(text), NULL);
    }
    if (is_word(tag, tag_tuple) || is_word(tag, tag_list)) {
        PyObject *items = unjellied_items(rules, sexp, depth);
        if (items == NULL || items == not_plain || is_word(tag, tag_list))
            return items;
        PyObject *tuple = PyList_AsTuple(items);
        Py_DECREF(items);
        return tuple;
    }
    if (is_word(tag, tag_dictionary)) {
        PyObject *result = PyDict_New();
        if (result == NULL)
            return NULL;
        for (Py_ssize_t i = 1; i < length; i++) {
            if (PyList_GET_SIZE(sexp) != length) {
                Py_DECREF(result);
                return Py_NewRef(not_plain);
            }
            PyObject *pair = PyList_GET_ITEM(sexp, i);
            if (!PyList_CheckExact(pair) || PyList_GET_SIZE(pair) != 2) {
                Py_DECREF(result);
                return Py_NewRef(not_plain);
            }
            Py_INCREF(pair); /* held while its parts are unjellied */
            PyObject *key = unjellied(rules, PyList_GET_ITEM(pair, 0), depth + 1);
            if (key == NULL || key == not_plain || PyList_GET_SIZE(pair) != 2) {
                Py_DECREF(pair);
                Py_DECREF(result);
                if (key != NULL && key != not_plain) {
                    Py_DECREF(key);
                    return Py_NewRef(not_plain);
                }
                return key;
            }
            PyObject *value = unjellied(rules, PyList_GET_ITEM(pair, 1), depth + 1);
            Py_DECREF(pair);
            if (value == NULL || value == not_plain) {
                Py_DECREF(key);
                Py_DECREF(result);
                return value;
            }
            int stored = PyDict_SetItem(result, key, value);
            Py_DECREF(key);
            Py_DECREF(value);
            if (stored < 0) {
                Py_DECREF(result);
                return NULL;
            }
        }
        return result;
    }
    if (is_word(tag, tag_none)) {
        if (length != 1)
            return Py_NewRef(not_plain);
        Py_RETURN_NONE;
    }
    if (is_word(tag, tag_boolean)) {
        PyObject *word = length == 2 ? PyList_GET_ITEM(sexp, 1) : NULL;
        if (word != NULL && is_word(word, word_true))
            Py_RETURN_TRUE;
        if (word != NULL && is_word(word, word_false))
            Py_RETURN_FALSE;
        return Py_NewRef(not_plain);
    }
    return Py_NewRef(not_plain);
}

/*
 * unjelly_plain(sexp, allowed, registry, factories) -> the value, or
 * NOT_PLAIN; allowed is the security options' allowedTypes, the others
 * Jelly's unjellyableRegistry and unjellyableFactoryRegistry.
 */
static PyObject *
unjelly_plain(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4 || !PyDict_Check(args[1]) || !PyDict_Check(args[2]) || !PyDict_Check(args[3])) {
        PyErr_SetString(PyExc_TypeError, "unjelly_plain(sexp, allowed, registry, factories)");
        return NULL;
    }
    Unjelly rules = {args[1], args[2], args[3]};
    return unjellied(&rules, args[0], 0);
}

static PyMethodDef methods[] = {
    {"decode", (PyCFunction)(void (*)(void))decode, METH_FASTCALL,
     "Decode Banana items from a buffer (see pbd/banana.py)."},
    {"encode", (PyCFunction)(void (*)(void))encode, METH_FASTCALL,
     "Encode one Banana message, or None to leave it to Python (see pbd/encoder.py)."},
    {"jelly_plain", (PyCFunction)jelly_plain, METH_O,
     "The s-expression of plain data, or NOT_PLAIN (see pbd/plainjelly.py)."},
    {"unjelly_plain", (PyCFunction)(void (*)(void))unjelly_plain, METH_FASTCALL,
     "The value of plain data's s-expression, or NOT_PLAIN (see pbd/plainjelly.py)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_definition = {
    PyModuleDef_HEAD_INIT, "pbd._speedups",
    "Banana decoding and encoding in C (optional; see pbd/banana.py, pbd/encoder.py).",
    -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    str_currentDialect = PyUnicode_InternFromString("currentDialect");
    bytes_pb = PyBytes_FromString("pb");
    tag_none = PyBytes_FromString("None");
    tag_unicode = PyBytes_FromString("unicode");
    tag_boolean = PyBytes_FromString("boolean");
    tag_list = PyBytes_FromString("list");
    tag_tuple = PyBytes_FromString("tuple");
    tag_dictionary = PyBytes_FromString("dictionary");
    word_true = PyBytes_FromString("true");
    word_false = PyBytes_FromString("false");
    not_plain = PyObject_CallNoArgs((PyObject *)&PyBaseObject_Type);
    if (str_currentDialect == NULL || bytes_pb == NULL || tag_none == NULL || tag_unicode == NULL
        || tag_boolean == NULL || tag_list == NULL || tag_tuple == NULL || tag_dictionary == NULL
        || word_true == NULL || word_false == NULL || not_plain == NULL)
        return NULL;
    PyObject *module = PyModule_Create(&module_definition);
    if (module == NULL)
        return NULL;
    if (PyModule_AddObjectRef(module, "NOT_PLAIN", not_plain) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
