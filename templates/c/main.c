/*
 * berth-template: a server for Berth plugin protocol v1 in C11 + POSIX, with nothing but libc.
 *
 * The file has three parts:
 *
 *   1. "Plugin API": the types and helpers your handlers use (requests, replies, JSON).
 *   2. "Your plugin": the name, the version, the tables of capabilities and hooks, and their
 *      handlers. This is the part to edit. Everything listed there must also be in
 *      berth.yaml (GET /v1/describe answers from the tables; `berth plugin test` compares).
 *   3. "Protocol plumbing": a small HTTP/1.1 server (one thread per connection, keep-alive,
 *      Content-Length and chunked bodies), routing, the Berth-* headers, deadlines, errors,
 *      JSON validation and escaping, JSON logs, and graceful shutdown on SIGTERM. It follows
 *      docs/protocol.md; you should not need to change it.
 *
 * Build and run locally:
 *
 *   gcc -std=c11 -O2 -Wall -Wextra -static -pthread -o plugin main.c
 *   BERTH_PORT=8080 ./plugin
 *   curl -s localhost:8080/v1/invoke/greet -d '{"name":"Berth"}'
 *
 * Check it against the protocol without an image, then build and check the image:
 *
 *   berth plugin test --exec ./plugin
 *   berth build . && berth plugin test berth/berth-template:0.1.0
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

/* ==========================================================================================
 * 1. Plugin API
 * ========================================================================================== */

/* A growable byte buffer. Zero-initialise it ({0}); buf_free releases it. Once anything was
 * added, data is also NUL-terminated (data[len] == '\0'). */
struct buf {
    char *data;
    size_t len;
    size_t cap;
};

static void buf_add(struct buf *b, const void *bytes, size_t n);
static void buf_puts(struct buf *b, const char *s);
static void buf_printf(struct buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Appends s (n bytes of UTF-8) as a quoted JSON string; invalid UTF-8 becomes U+FFFD. */
static void buf_json_string(struct buf *b, const char *s, size_t n);
static void buf_free(struct buf *b);

/* A JSON value inside a request body, already validated: its type and its raw text. */
enum json_type { JSON_NULL, JSON_FALSE, JSON_TRUE, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT };

struct json_value {
    enum json_type type;
    const char *text;
    size_t len;
};

/* Walks an object's members: start with *pos = 0; returns false after the last one. */
static bool json_object_next(const struct json_value *object, size_t *pos, struct json_value *key,
                             struct json_value *value);
/* Walks an array's items: start with *pos = 0; returns false after the last one. */
static bool json_array_next(const struct json_value *array, size_t *pos, struct json_value *item);
/* Appends the decoded (unescaped, UTF-8) contents of a JSON string to out. */
static void json_string_decode(const struct json_value *string, struct buf *out);
/* Whether a JSON string (a key, say) decodes to exactly `literal`. */
static bool json_string_is(const struct json_value *string, const char *literal);
/* The value of a JSON number; false when the value is not a number. */
static bool json_number(const struct json_value *number, double *out) __attribute__((unused));
/* Whether text is exactly one JSON value (whitespace around it allowed). */
static bool json_parse(const char *text, size_t len, struct json_value *root);

/* What the protocol headers said about the request being served. */
struct request {
    const char *request_id; /* Berth-Request-Id, "" when absent; pass it on to other plugins */
    const char *caller;     /* Berth-Caller: a plugin's name or "user:<subject>"; "" when absent */
    int64_t deadline;       /* when the caller stops waiting (monotonic ms), 0 when there is none */
};

/* Milliseconds left before the request's deadline (0 once it passed), -1 without a deadline.
 * C cannot interrupt a running handler: long work should check this now and then and stop
 * early (the caller is answered 504 deadline_exceeded whatever the handler does then). */
static int64_t request_remaining_ms(const struct request *req) __attribute__((unused));

/* Log levels. */
enum level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

/* Writes a log line that belongs to the request. */
static void request_log(const struct request *req, enum level level, const char *message);

/* What a handler answers. The status is 200 unless reply_error sets another one. */
struct reply {
    int status;
    struct buf body; /* capability: the output JSON; filter hook: the action (reply_continue…) */
    char code[64];
    char message[512];
};

/* Answers an error: status, a stable lower_snake_case code, a message for a person. */
static void reply_error(struct reply *reply, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Filter hook answers. reply_modify takes the new event as JSON text; it must be an object. */
static void reply_continue(struct reply *reply);
static void reply_veto(struct reply *reply, const char *reason);
static void reply_modify(struct reply *reply, const char *event_json, size_t len)
    __attribute__((unused));

typedef void (*capability_fn)(const struct request *req, const struct json_value *input,
                              struct reply *reply);
typedef void (*hook_fn)(const struct request *req, const struct json_value *event,
                        struct reply *reply);

struct capability {
    const char *name;
    capability_fn handle;
};

/* mode is "filter" (answers an action) or "observe" (answered 204; the reply is ignored). */
struct hook {
    const char *name;
    const char *mode;
    hook_fn handle;
};

/* ==========================================================================================
 * 2. Your plugin
 * ========================================================================================== */

/* They must equal `metadata.name` and `spec.version` in berth.yaml. */
#define PLUGIN_NAME "berth-template"
#define PLUGIN_VERSION "0.1.0"

/* greet: {"name": string?} -> {"message": "Hello, NAME!"}, "world" when no name is given. */
static void greet(const struct request *req, const struct json_value *input, struct reply *reply)
{
    if (input->type != JSON_OBJECT) {
        reply_error(reply, 400, "invalid_input", "the input must be a JSON object like {\"name\": \"Berth\"}");
        return;
    }
    struct buf name = {0};
    bool named = false;
    struct json_value key, value;
    size_t pos = 0;
    while (json_object_next(input, &pos, &key, &value)) {
        if (!json_string_is(&key, "name")) {
            reply_error(reply, 400, "invalid_input", "unknown field in the input; greet takes only \"name\"");
            goto done;
        }
        name.len = 0;
        named = false;
        if (value.type == JSON_STRING) {
            json_string_decode(&value, &name);
            named = true;
        } else if (value.type != JSON_NULL) {
            reply_error(reply, 400, "invalid_input", "\"name\" must be a string");
            goto done;
        }
    }
    /* The manifest's maxLength counts characters (code points), as JSON Schema does: count the
     * bytes that do not continue a UTF-8 sequence (the decoded string is valid UTF-8). */
    size_t chars = 0;
    for (size_t i = 0; named && i < name.len; i++)
        chars += ((unsigned char)name.data[i] & 0xC0) != 0x80;
    if (named && chars > 256) {
        reply_error(reply, 400, "invalid_input", "name is longer than 256 characters; send a shorter name");
        goto done;
    }
    request_log(req, LOG_DEBUG, "greeting");

    struct buf message = {0};
    buf_puts(&message, "Hello, ");
    if (named)
        buf_add(&message, name.data, name.len);
    else
        buf_puts(&message, "world");
    buf_puts(&message, "!");
    buf_puts(&reply->body, "{\"message\":");
    buf_json_string(&reply->body, message.data, message.len);
    buf_puts(&reply->body, "}");
    buf_free(&message);
done:
    buf_free(&name);
}

/* before_command (filter): vetoes a command containing `rm -rf /`, lets the others through.
 * The event is {"command": string, "args": [string], "cwd": string}. */
static void before_command(const struct request *req, const struct json_value *event,
                           struct reply *reply)
{
    (void)req;
    struct buf command = {0};
    struct json_value key, value, item;
    size_t pos = 0;
    while (json_object_next(event, &pos, &key, &value)) {
        bool is_command = json_string_is(&key, "command");
        if ((is_command || json_string_is(&key, "cwd")) && value.type != JSON_STRING &&
            value.type != JSON_NULL) {
            reply_error(reply, 400, "invalid_input", "the event's \"command\" and \"cwd\" must be strings");
            goto done;
        }
        if (json_string_is(&key, "args") && value.type != JSON_NULL) {
            size_t at = 0;
            bool strings = value.type == JSON_ARRAY;
            while (strings && json_array_next(&value, &at, &item))
                strings = item.type == JSON_STRING;
            if (!strings) {
                reply_error(reply, 400, "invalid_input", "the event's \"args\" must be an array of strings");
                goto done;
            }
        }
        if (is_command && value.type == JSON_STRING) {
            command.len = 0;
            json_string_decode(&value, &command);
        }
    }
    static const char danger[] = "rm -rf /";
    bool dangerous = false;
    for (size_t i = 0; !dangerous && i + sizeof danger - 1 <= command.len; i++)
        dangerous = memcmp(command.data + i, danger, sizeof danger - 1) == 0;
    if (dangerous)
        reply_veto(reply, "this command contains `rm -rf /`, which would delete the whole "
                          "filesystem; name the directory to remove instead");
    else
        reply_continue(reply);
done:
    buf_free(&command);
}

static const struct capability capabilities[] = {
    {"greet", greet},
};

static const struct hook hooks[] = {
    {"before_command", "filter", before_command},
};

/* ==========================================================================================
 * 3. Protocol plumbing (docs/protocol.md, protocol v1)
 * ========================================================================================== */

#define DEFAULT_PORT 8080
#define DEFAULT_MAX_CONCURRENCY 16
#define MAX_BODY_BYTES (4 * 1024 * 1024) /* larger bodies get 413 payload_too_large */
#define MAX_HEADER_BYTES 8192            /* header names and values in total; 431 beyond */
#define MAX_HEADERS 256
#define MAX_REQUEST_LINE 8192 /* 414 beyond */
#define DRAIN_TIMEOUT_MS 10000
#define HEAD_TIMEOUT_MS 10000 /* a request head must arrive whole within this; 408 beyond */
#define IO_TIMEOUT_S 30       /* a request body must arrive whole within this; dropped beyond */
#define SPARE_CONNECTIONS 8   /* connections beyond BERTH_MAX_CONCURRENCY: health checks, new ones */
#define NEW_IDLE_EVICT_MS 2000 /* a new connection silent this long may be closed to make room */
#define JSON_MAX_DEPTH 128
#define THREAD_STACK_BYTES (1024 * 1024) /* per connection; only the pages used count */
/* Request line + header lines with their framing, and room to spare. */
#define HEAD_CAP (MAX_REQUEST_LINE + MAX_HEADER_BYTES + MAX_HEADERS * 8 + 64)
#define IN_CAP (HEAD_CAP + 16 * 1024)

#define N_CAPABILITIES (sizeof capabilities / sizeof capabilities[0])
#define N_HOOKS (sizeof hooks / sizeof hooks[0])

/* ---- memory and buffers ---- */

static void out_of_memory(void)
{
    static const char line[] = "{\"level\":\"ERROR\",\"message\":\"out of memory\"}\n";
    ssize_t ignored = write(STDOUT_FILENO, line, sizeof line - 1);
    (void)ignored;
    abort();
}

static void buf_reserve(struct buf *b, size_t extra)
{
    if (b->cap - b->len >= extra)
        return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->len < extra) {
        if (cap > SIZE_MAX / 2)
            out_of_memory();
        cap *= 2;
    }
    char *data = realloc(b->data, cap);
    if (!data)
        out_of_memory();
    b->data = data;
    b->cap = cap;
}

static void buf_add(struct buf *b, const void *bytes, size_t n)
{
    buf_reserve(b, n + 1);
    if (n)
        memcpy(b->data + b->len, bytes, n);
    b->len += n;
    b->data[b->len] = '\0';
}

static void buf_puts(struct buf *b, const char *s) { buf_add(b, s, strlen(s)); }

static void buf_printf(struct buf *b, const char *fmt, ...)
{
    char small[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n < sizeof small) {
        buf_add(b, small, (size_t)n);
        return;
    }
    buf_reserve(b, (size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

static void buf_free(struct buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

/* ---- UTF-8 and JSON ---- */

/* Length of the valid UTF-8 sequence at p (1-4), or 0 when it is not valid UTF-8. */
static size_t utf8_sequence(const unsigned char *p, const unsigned char *end)
{
    unsigned char c = p[0];
    size_t n;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        n = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        if (c == 0xE0)
            lo = 0xA0; /* no overlong forms */
        if (c == 0xED)
            hi = 0x9F; /* no surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        if (c == 0xF0)
            lo = 0x90;
        if (c == 0xF4)
            hi = 0x8F; /* nothing above U+10FFFF */
    } else
        return 0;
    if ((size_t)(end - p) < n)
        return 0;
    if (p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++)
        if (p[i] < 0x80 || p[i] > 0xBF)
            return 0;
    return n;
}

static void utf8_encode(struct buf *b, unsigned cp)
{
    char s[4];
    size_t n;
    if (cp < 0x80) {
        s[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        s[0] = (char)(0xC0 | (cp >> 6));
        s[1] = (char)(0x80 | (cp & 0x3F));
        n = 2;
    } else if (cp < 0x10000) {
        s[0] = (char)(0xE0 | (cp >> 12));
        s[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        s[2] = (char)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        s[0] = (char)(0xF0 | (cp >> 18));
        s[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        s[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
        s[3] = (char)(0x80 | (cp & 0x3F));
        n = 4;
    }
    buf_add(b, s, n);
}

static void buf_json_string(struct buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)s, *end = p + n;
    buf_reserve(b, n + 2);
    buf_add(b, "\"", 1);
    while (p < end) {
        unsigned char c = *p;
        if (c == '"' || c == '\\') {
            char esc[2] = {'\\', (char)c};
            buf_add(b, esc, 2);
            p++;
        } else if (c < 0x20) {
            const char *named = c == '\n' ? "\\n" : c == '\r' ? "\\r" : c == '\t' ? "\\t"
                              : c == '\b' ? "\\b" : c == '\f' ? "\\f" : NULL;
            if (named) {
                buf_add(b, named, 2);
            } else {
                char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
                buf_add(b, esc, 6);
            }
            p++;
        } else if (c < 0x80) {
            const unsigned char *q = p;
            while (q < end && *q >= 0x20 && *q < 0x80 && *q != '"' && *q != '\\')
                q++;
            buf_add(b, p, (size_t)(q - p));
            p = q;
        } else {
            size_t len = utf8_sequence(p, end);
            if (len) {
                buf_add(b, p, len);
                p += len;
            } else {
                buf_add(b, "\\ufffd", 6);
                p++;
            }
        }
    }
    buf_add(b, "\"", 1);
}

static bool is_digit(char c) { return c >= '0' && c <= '9'; }

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static const char *json_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

/* Each json_scan_* returns the end of the value starting at p, or NULL when it is not JSON. */
static const char *json_scan_string(const char *p, const char *end)
{
    p++; /* the opening quote */
    while (p < end) {
        unsigned char c = (unsigned char)*p;
        if (c == '"')
            return p + 1;
        if (c == '\\') {
            if (++p >= end)
                return NULL;
            if (*p == 'u') {
                if (end - p < 5)
                    return NULL;
                for (int i = 1; i <= 4; i++)
                    if (hex_value(p[i]) < 0)
                        return NULL;
                p += 5;
            } else if (strchr("\"\\/bfnrt", *p) && *p) {
                p++;
            } else {
                return NULL;
            }
        } else if (c < 0x20) {
            return NULL;
        } else {
            size_t n = utf8_sequence((const unsigned char *)p, (const unsigned char *)end);
            if (!n)
                return NULL;
            p += n;
        }
    }
    return NULL;
}

static const char *json_scan_number(const char *p, const char *end)
{
    if (p < end && *p == '-')
        p++;
    if (p >= end)
        return NULL;
    if (*p == '0')
        p++;
    else if (*p >= '1' && *p <= '9')
        while (p < end && is_digit(*p))
            p++;
    else
        return NULL;
    if (p < end && *p == '.') {
        if (++p >= end || !is_digit(*p))
            return NULL;
        while (p < end && is_digit(*p))
            p++;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        if (++p < end && (*p == '+' || *p == '-'))
            p++;
        if (p >= end || !is_digit(*p))
            return NULL;
        while (p < end && is_digit(*p))
            p++;
    }
    return p;
}

static const char *json_scan_literal(const char *p, const char *end, const char *word)
{
    size_t n = strlen(word);
    return (size_t)(end - p) >= n && memcmp(p, word, n) == 0 ? p + n : NULL;
}

static const char *json_scan(const char *p, const char *end, int depth, struct json_value *out)
{
    const char *start = p;
    enum json_type type;
    if (p >= end)
        return NULL;
    switch (*p) {
    case '{':
    case '[': {
        bool object = *p == '{';
        char close = object ? '}' : ']';
        type = object ? JSON_OBJECT : JSON_ARRAY;
        if (depth >= JSON_MAX_DEPTH)
            return NULL;
        p = json_ws(p + 1, end);
        if (p < end && *p == close) {
            p++;
            break;
        }
        for (;;) {
            if (object) {
                if (p >= end || *p != '"' || !(p = json_scan_string(p, end)))
                    return NULL;
                p = json_ws(p, end);
                if (p >= end || *p != ':')
                    return NULL;
                p = json_ws(p + 1, end);
            }
            if (!(p = json_scan(p, end, depth + 1, NULL)))
                return NULL;
            p = json_ws(p, end);
            if (p < end && *p == ',') {
                p = json_ws(p + 1, end);
                continue;
            }
            if (p < end && *p == close) {
                p++;
                break;
            }
            return NULL;
        }
        break;
    }
    case '"':
        type = JSON_STRING;
        p = json_scan_string(p, end);
        break;
    case 't':
        type = JSON_TRUE;
        p = json_scan_literal(p, end, "true");
        break;
    case 'f':
        type = JSON_FALSE;
        p = json_scan_literal(p, end, "false");
        break;
    case 'n':
        type = JSON_NULL;
        p = json_scan_literal(p, end, "null");
        break;
    default:
        type = JSON_NUMBER;
        p = json_scan_number(p, end);
        break;
    }
    if (p && out) {
        out->type = type;
        out->text = start;
        out->len = (size_t)(p - start);
    }
    return p;
}

static bool json_parse(const char *text, size_t len, struct json_value *root)
{
    const char *end = text + len;
    const char *p = json_scan(json_ws(text, end), end, 0, root);
    return p && json_ws(p, end) == end;
}

/* Shared walk of objects and arrays; the value was validated, so the syntax is known good. */
static bool json_container_next(const struct json_value *c, size_t *pos, struct json_value *key,
                                struct json_value *value)
{
    const char *end = c->text + c->len;
    const char *p = json_ws(c->text + (*pos ? *pos : 1), end);
    if (*p == ',')
        p = json_ws(p + 1, end);
    if (*p == '}' || *p == ']')
        return false;
    if (key) {
        p = json_scan(p, end, 0, key);
        p = json_ws(p, end) + 1; /* the colon */
        p = json_ws(p, end);
    }
    p = json_scan(p, end, 0, value);
    *pos = (size_t)(p - c->text);
    return true;
}

static bool json_object_next(const struct json_value *object, size_t *pos, struct json_value *key,
                             struct json_value *value)
{
    return object->type == JSON_OBJECT && json_container_next(object, pos, key, value);
}

static bool json_array_next(const struct json_value *array, size_t *pos, struct json_value *item)
{
    return array->type == JSON_ARRAY && json_container_next(array, pos, NULL, item);
}

static unsigned json_hex4(const char *p)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++)
        v = v * 16 + (unsigned)hex_value(p[i]);
    return v;
}

static void json_string_decode(const struct json_value *string, struct buf *out)
{
    const char *p = string->text + 1, *end = string->text + string->len - 1;
    while (p < end) {
        if (*p != '\\') {
            const char *q = p;
            while (q < end && *q != '\\')
                q++;
            buf_add(out, p, (size_t)(q - p));
            p = q;
            continue;
        }
        char c = p[1];
        p += 2;
        switch (c) {
        case 'b': buf_add(out, "\b", 1); break;
        case 'f': buf_add(out, "\f", 1); break;
        case 'n': buf_add(out, "\n", 1); break;
        case 'r': buf_add(out, "\r", 1); break;
        case 't': buf_add(out, "\t", 1); break;
        case 'u': {
            unsigned cp = json_hex4(p);
            p += 4;
            if (cp >= 0xD800 && cp <= 0xDBFF && end - p >= 6 && p[0] == '\\' && p[1] == 'u') {
                unsigned low = json_hex4(p + 2);
                if (low >= 0xDC00 && low <= 0xDFFF) {
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
                    p += 6;
                }
            }
            if (cp >= 0xD800 && cp <= 0xDFFF)
                cp = 0xFFFD; /* a lone surrogate, as encoding/json and others decode it */
            utf8_encode(out, cp);
            break;
        }
        default: buf_add(out, &c, 1); break; /* " \ / */
        }
    }
}

static bool json_string_is(const struct json_value *string, const char *literal)
{
    if (string->type != JSON_STRING)
        return false;
    size_t n = strlen(literal);
    if (!memchr(string->text, '\\', string->len))
        return string->len == n + 2 && memcmp(string->text + 1, literal, n) == 0;
    struct buf decoded = {0};
    json_string_decode(string, &decoded);
    bool same = decoded.len == n && (n == 0 || memcmp(decoded.data, literal, n) == 0);
    buf_free(&decoded);
    return same;
}

static bool json_number(const struct json_value *number, double *out)
{
    if (number->type != JSON_NUMBER)
        return false;
    struct buf text = {0}; /* a NUL-terminated copy, so strtod stops where the number does */
    buf_add(&text, number->text, number->len);
    *out = strtod(text.data, NULL);
    buf_free(&text);
    return true;
}

/* ---- time and logs ---- */

static int64_t monotonic_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static enum level log_level = LOG_INFO;
static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;

/* One JSON object per line on stdout: timestamp, level, message, request_id (when the line
 * belongs to a request), then `fields`: more members, already JSON ("\"status\":200"). */
static void log_line(enum level level, const char *request_id, const char *message,
                     const char *fields)
{
    static const char *names[] = {"DEBUG", "INFO", "WARN", "ERROR"};
    if (level < log_level)
        return;
    struct timespec ts;
    struct tm tm;
    char stamp[32];
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(stamp + n, sizeof stamp - n, ".%03ldZ", ts.tv_nsec / 1000000);

    struct buf line = {0};
    buf_printf(&line, "{\"timestamp\":\"%s\",\"level\":\"%s\",\"message\":", stamp, names[level]);
    buf_json_string(&line, message, strlen(message));
    if (request_id && *request_id) {
        buf_puts(&line, ",\"request_id\":");
        buf_json_string(&line, request_id, strlen(request_id));
    }
    if (fields && *fields) {
        buf_puts(&line, ",");
        buf_puts(&line, fields);
    }
    buf_puts(&line, "}\n");
    pthread_mutex_lock(&log_mu);
    for (size_t off = 0; off < line.len;) {
        ssize_t w = write(STDOUT_FILENO, line.data + off, line.len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break;
        off += (size_t)w;
    }
    pthread_mutex_unlock(&log_mu);
    buf_free(&line);
}

static void request_log(const struct request *req, enum level level, const char *message)
{
    log_line(level, req->request_id, message, NULL);
}

static int64_t request_remaining_ms(const struct request *req)
{
    if (!req->deadline)
        return -1;
    int64_t left = req->deadline - monotonic_ms();
    return left > 0 ? left : 0;
}

/* ---- replies ---- */

static void reply_error(struct reply *reply, int status, const char *code, const char *fmt, ...)
{
    va_list ap;
    reply->status = status;
    snprintf(reply->code, sizeof reply->code, "%s", code);
    va_start(ap, fmt);
    vsnprintf(reply->message, sizeof reply->message, fmt, ap);
    va_end(ap);
}

static void reply_continue(struct reply *reply)
{
    reply->body.len = 0;
    buf_puts(&reply->body, "{\"action\":\"continue\"}");
}

static void reply_veto(struct reply *reply, const char *reason)
{
    if (!reason || !*reason) {
        reply_error(reply, 500, "internal", "the hook vetoed without a reason");
        return;
    }
    reply->body.len = 0;
    buf_puts(&reply->body, "{\"action\":\"veto\",\"reason\":");
    buf_json_string(&reply->body, reason, strlen(reason));
    buf_puts(&reply->body, "}");
}

static void reply_modify(struct reply *reply, const char *event_json, size_t len)
{
    struct json_value event;
    if (!json_parse(event_json, len, &event) || event.type != JSON_OBJECT) {
        reply_error(reply, 500, "internal", "the hook answered modify with an event that is not a JSON object");
        return;
    }
    reply->body.len = 0;
    buf_puts(&reply->body, "{\"action\":\"modify\",\"event\":");
    buf_add(&reply->body, event.text, event.len);
    buf_puts(&reply->body, "}");
}

/* ---- connections, slots and shutdown ---- */

enum slot_state { SLOT_FREE, SLOT_IDLE, SLOT_BUSY };

/* One per connection being served; at most BERTH_MAX_CONCURRENCY + SPARE_CONNECTIONS of them:
 * the gateway never sends more than BERTH_MAX_CONCURRENCY requests at once, and the spare
 * places keep health checks and new connections served while every request is busy. */
struct slot {
    enum slot_state state;
    int fd;
    bool closing;     /* shut down by the server (idle at SIGTERM, or evicted) */
    bool served;      /* it has carried a request */
    int64_t last_use; /* when it became idle (or was accepted), to evict the longest idle first */
};

static struct slot *slots;
static int max_slots;
static int live_slots;
static bool stopping;
static pthread_mutex_t slots_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t slots_changed;
static int wake_pipe[2];
static struct buf describe_json; /* what GET /v1/describe answers, built once */

static bool is_stopping(void)
{
    pthread_mutex_lock(&slots_mu);
    bool s = stopping;
    pthread_mutex_unlock(&slots_mu);
    return s;
}

/* Whether the peer has sent bytes not read yet: such a connection is not idle. */
static bool has_pending_bytes(int fd)
{
    char c;
    return recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) > 0;
}

/* Closes an idle connection under slots_mu: its thread wakes up from poll and leaves. */
static void close_idle_locked(struct slot *s)
{
    s->closing = true;
    shutdown(s->fd, SHUT_RDWR);
}

/* Gives the place of an idle connection to a new one (one at a time): the longest-idle one
 * that has carried a request, else the longest-silent new one that has sent nothing for
 * NEW_IDLE_EVICT_MS. False when none can be closed now. */
static bool evict_idle_locked(int64_t now)
{
    struct slot *oldest = NULL, *silent = NULL;
    for (int i = 0; i < max_slots; i++)
        if (slots[i].state != SLOT_FREE && slots[i].closing)
            return true; /* an eviction is under way: wait for its slot */
    for (int i = 0; i < max_slots; i++) {
        struct slot *s = &slots[i];
        if (s->state != SLOT_IDLE || s->closing || has_pending_bytes(s->fd))
            continue;
        if (s->served && (!oldest || s->last_use < oldest->last_use))
            oldest = s;
        else if (!s->served && now - s->last_use >= NEW_IDLE_EVICT_MS &&
                 (!silent || s->last_use < silent->last_use))
            silent = s;
    }
    if (!oldest)
        oldest = silent;
    if (oldest)
        close_idle_locked(oldest);
    return oldest != NULL;
}

/* The input side of a connection: bytes received and not consumed yet are in[start, end). */
struct conn {
    int fd;
    struct slot *slot;
    bool linger;    /* an answer was sent on a connection we close: let the client read it */
    int64_t until;  /* monotonic ms by which the head or body being read must have arrived */
    bool timed_out; /* a read gave up at `until` */
    size_t start, end;
    char in[IN_CAP];
    char head[HEAD_CAP + 1];
};

/* Reads more bytes into the buffer: 1 when some arrived, 0 at EOF, -1 on error or timeout.
 * The time limit is absolute (c->until), so a client trickling a byte at a time cannot hold
 * the connection open for longer than that. */
static int conn_fill(struct conn *c)
{
    if (c->start > 0 && c->start == c->end)
        c->start = c->end = 0;
    if (c->end == sizeof c->in) {
        memmove(c->in, c->in + c->start, c->end - c->start);
        c->end -= c->start;
        c->start = 0;
    }
    for (;;) {
        int64_t left = c->until - monotonic_ms();
        if (left <= 0) {
            c->timed_out = true;
            return -1;
        }
        struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
        int ready = poll(&pfd, 1, left > INT_MAX ? INT_MAX : (int)left);
        if (ready < 0 && errno == EINTR)
            continue;
        if (ready < 0)
            return -1;
        if (ready == 0)
            continue; /* the time check above ends it */
        ssize_t n = recv(c->fd, c->in + c->end, sizeof c->in - c->end, MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            continue;
        if (n > 0) {
            c->end += (size_t)n;
            return 1;
        }
        if (n == 0)
            return 0;
        if (errno != EINTR)
            return -1;
    }
}

/* Copies n body bytes to out (or drops them when out is NULL). 0 when done, -1 otherwise. */
static int conn_read_exact(struct conn *c, struct buf *out, size_t n)
{
    while (n > 0) {
        if (c->start == c->end) {
            if (conn_fill(c) <= 0)
                return -1;
        }
        size_t take = c->end - c->start < n ? c->end - c->start : n;
        if (out)
            buf_add(out, c->in + c->start, take);
        c->start += take;
        n -= take;
    }
    return 0;
}

/* Finds the next line (up to max bytes, CRLF or LF ended), without its ending.
 * 0 when found, 1 when longer than max, -1 on EOF or error. */
static int conn_read_line(struct conn *c, size_t max, const char **line, size_t *len)
{
    for (;;) {
        char *nl = memchr(c->in + c->start, '\n', c->end - c->start);
        if (nl) {
            size_t n = (size_t)(nl - (c->in + c->start));
            if (n > max)
                return 1;
            *line = c->in + c->start;
            *len = n > 0 && nl[-1] == '\r' ? n - 1 : n;
            c->start += n + 1;
            return 0;
        }
        if (c->end - c->start > max)
            return 1;
        if (c->start > 0) {
            memmove(c->in, c->in + c->start, c->end - c->start);
            c->end -= c->start;
            c->start = 0;
        }
        if (conn_fill(c) <= 0)
            return -1;
    }
}

static bool send_all(int fd, const char *data, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, data, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return false;
        data += w;
        n -= (size_t)w;
    }
    return true;
}

/* ---- HTTP requests ---- */

struct http_request {
    const char *method;
    const char *target;
    char path[HEAD_CAP];
    int minor; /* HTTP/1.minor */
    const char *request_id;
    const char *caller;
    const char *deadline;
    int deadline_count;
    long long content_length; /* -1 when absent */
    bool chunked;
    bool close;      /* the connection ends after this request */
    bool keep_alive; /* HTTP/1.0 asked for keep-alive */
    bool expect_continue;
};

/* An answer before or instead of the handler's. */
struct answer {
    int status;
    const char *code;
    char message[600];
    const char *allow;
    const char *body; /* a success body; NULL for errors (built from code and message) */
    size_t body_len;
};

static void answer_error(struct answer *a, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void answer_error(struct answer *a, int status, const char *code, const char *fmt, ...)
{
    va_list ap;
    a->status = status;
    a->code = code;
    a->body = NULL;
    va_start(ap, fmt);
    vsnprintf(a->message, sizeof a->message, fmt, ap);
    va_end(ap);
}

static const char *status_text(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 417: return "Expectation Failed";
    case 422: return "Unprocessable Content";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Status";
    }
}

static bool is_token_char(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* Whether a comma-separated header value holds token (any case). */
static bool has_token(const char *value, const char *token)
{
    size_t n = strlen(token);
    const char *p = value;
    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        const char *q = p;
        while (*q && *q != ',')
            q++;
        const char *e = q;
        while (e > p && (e[-1] == ' ' || e[-1] == '\t'))
            e--;
        if ((size_t)(e - p) == n && strncasecmp(p, token, n) == 0)
            return true;
        p = q;
    }
    return false;
}

/* Reads the request head into c->head and parses it. 0 when a request was read, -1 when the
 * connection ended before one, or an HTTP status for a head that cannot be served. */
static int read_head(struct conn *c, struct http_request *r, struct answer *a)
{
    /* Empty lines before a request are allowed (RFC 9112 §2.2). */
    for (;;) {
        while (c->start < c->end && (c->in[c->start] == '\r' || c->in[c->start] == '\n'))
            c->start++;
        if (c->start < c->end)
            break;
        if (conn_fill(c) <= 0)
            return -1;
    }
    size_t head_len = 0;
    size_t scanned = 0; /* bytes already searched for the end of the head */
    for (;;) {
        const char *from = c->in + c->start;
        size_t have = c->end - c->start;
        const char *found = NULL;
        for (size_t i = scanned > 2 ? scanned - 2 : 0; i + 1 < have && !found; i++) {
            if (from[i] == '\n' && from[i + 1] == '\n')
                found = from + i + 2;
            else if (from[i] == '\n' && from[i + 1] == '\r' && i + 2 < have && from[i + 2] == '\n')
                found = from + i + 3;
        }
        if (found) {
            head_len = (size_t)(found - from);
            break;
        }
        if (have >= HEAD_CAP) {
            r->close = true;
            if (!memchr(from, '\n', MAX_REQUEST_LINE)) {
                answer_error(a, 414, "uri_too_long", "the request line is longer than %d bytes", MAX_REQUEST_LINE);
                return 414;
            }
            answer_error(a, 431, "headers_too_large",
                         "the request headers are larger than %d bytes in total", MAX_HEADER_BYTES);
            return 431;
        }
        scanned = have;
        if (c->start > 0) {
            memmove(c->in, c->in + c->start, have);
            c->end = have;
            c->start = 0;
        }
        int got = conn_fill(c);
        if (got <= 0 && c->timed_out) {
            r->close = true;
            answer_error(a, 408, "request_timeout", "the request head did not arrive within %d ms",
                         HEAD_TIMEOUT_MS);
            return 408;
        }
        if (got <= 0)
            return -1;
    }
    if (head_len > HEAD_CAP) {
        r->close = true;
        answer_error(a, 431, "headers_too_large", "the request headers are larger than %d bytes in total",
                     MAX_HEADER_BYTES);
        return 431;
    }
    memcpy(c->head, c->in + c->start, head_len);
    c->head[head_len] = '\0';
    c->start += head_len;
    if (memchr(c->head, '\0', head_len)) {
        r->close = true;
        answer_error(a, 400, "bad_request", "the request head holds a NUL byte");
        return 400;
    }

    /* Split into NUL-terminated lines. */
    char *lines[MAX_HEADERS + 2];
    int n_lines = 0;
    char *p = c->head;
    while (*p) {
        char *nl = strchr(p, '\n');
        if (!nl)
            break;
        char *e = nl > p && nl[-1] == '\r' ? nl - 1 : nl;
        *e = '\0';
        if (e == p)
            break; /* the empty line that ends the head */
        if (n_lines == MAX_HEADERS + 1) {
            r->close = true;
            answer_error(a, 431, "headers_too_large", "more than %d request headers", MAX_HEADERS);
            return 431;
        }
        lines[n_lines++] = p;
        p = nl + 1;
    }
    r->close = true;
    if (n_lines == 0) {
        answer_error(a, 400, "bad_request", "the request line is missing");
        return 400;
    }
    if (strlen(lines[0]) > MAX_REQUEST_LINE) {
        answer_error(a, 414, "uri_too_long", "the request line is longer than %d bytes", MAX_REQUEST_LINE);
        return 414;
    }

    /* Request line: METHOD SP target SP HTTP/1.x */
    char *method = lines[0];
    char *sp1 = strchr(method, ' ');
    char *sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
    if (!sp1 || !sp2 || strchr(sp2 + 1, ' ') || sp1 == method || sp2 == sp1 + 1) {
        answer_error(a, 400, "bad_request", "the request line is not METHOD TARGET HTTP/1.1");
        return 400;
    }
    *sp1 = *sp2 = '\0';
    for (char *m = method; *m; m++)
        if (!is_token_char((unsigned char)*m)) {
            answer_error(a, 400, "bad_request", "the request method is not a token");
            return 400;
        }
    const char *version = sp2 + 1;
    if (strncmp(version, "HTTP/", 5) != 0 || !is_digit(version[5]) || version[6] != '.' ||
        !is_digit(version[7]) || version[8]) {
        answer_error(a, 400, "bad_request", "the request line does not end with HTTP/1.1");
        return 400;
    }
    if (version[5] != '1') {
        answer_error(a, 505, "http_version_not_supported", "this plugin speaks HTTP/1.1 only");
        return 505;
    }
    for (const char *t = sp1 + 1; *t; t++)
        if ((unsigned char)*t <= 0x20 || (unsigned char)*t == 0x7F) {
            answer_error(a, 400, "bad_request", "the request target holds a control character");
            return 400;
        }
    r->method = method;
    r->target = sp1 + 1;
    r->minor = version[7] - '0';
    r->close = false;

    size_t header_bytes = 0;
    bool has_length = false, has_te = false;
    for (int i = 1; i < n_lines; i++) {
        char *line = lines[i];
        if (*line == ' ' || *line == '\t') {
            r->close = true;
            answer_error(a, 400, "bad_request", "folded header lines are not allowed");
            return 400;
        }
        char *colon = strchr(line, ':');
        if (!colon || colon == line) {
            r->close = true;
            answer_error(a, 400, "bad_request", "a header line has no name");
            return 400;
        }
        for (char *q = line; q < colon; q++)
            if (!is_token_char((unsigned char)*q)) {
                r->close = true;
                answer_error(a, 400, "bad_request", "a header name holds a character that is not allowed");
                return 400;
            }
        *colon = '\0';
        char *value = colon + 1;
        while (*value == ' ' || *value == '\t')
            value++;
        char *vend = value + strlen(value);
        while (vend > value && (vend[-1] == ' ' || vend[-1] == '\t'))
            *--vend = '\0';
        /* A bare CR or another control character could end the line for some reader and
         * smuggle a header into what is echoed (Berth-Request-Id): refuse the request. */
        for (const char *q = value; q < vend; q++)
            if (((unsigned char)*q < 0x20 && *q != '\t') || (unsigned char)*q == 0x7F) {
                r->close = true;
                answer_error(a, 400, "bad_request", "a header value holds a control character");
                return 400;
            }
        header_bytes += (size_t)(colon - line) + (size_t)(vend - value);
        if (header_bytes > MAX_HEADER_BYTES) {
            r->close = true;
            answer_error(a, 431, "headers_too_large",
                         "the request headers are larger than %d bytes in total", MAX_HEADER_BYTES);
            return 431;
        }
        if (strcasecmp(line, "Content-Length") == 0) {
            /* Digits only; a value over the body limit is kept as MAX_BODY_BYTES + 1 (answered
             * 413 in the protocol's order), so the number never grows past what it can hold. */
            long long v = 0;
            bool ok = *value != '\0';
            for (const char *d = value; ok && *d; d++) {
                ok = is_digit(*d);
                if (ok && v <= MAX_BODY_BYTES)
                    v = v * 10 + (*d - '0');
            }
            if (v > MAX_BODY_BYTES)
                v = MAX_BODY_BYTES + 1LL;
            if (!ok || (has_length && v != r->content_length)) {
                r->close = true;
                answer_error(a, 400, "bad_request", "the Content-Length header is not one whole number");
                return 400;
            }
            has_length = true;
            r->content_length = v;
        } else if (strcasecmp(line, "Transfer-Encoding") == 0) {
            has_te = true;
            if (strcasecmp(value, "chunked") != 0) {
                r->close = true;
                answer_error(a, 501, "not_implemented", "only the chunked transfer coding is supported");
                return 501;
            }
            r->chunked = true;
        } else if (strcasecmp(line, "Connection") == 0) {
            if (has_token(value, "close"))
                r->close = true;
            if (has_token(value, "keep-alive"))
                r->keep_alive = true;
        } else if (strcasecmp(line, "Expect") == 0) {
            if (strcasecmp(value, "100-continue") != 0) {
                answer_error(a, 417, "expectation_failed", "only Expect: 100-continue is supported");
                r->close = true;
                return 417;
            }
            r->expect_continue = true;
        } else if (strcasecmp(line, "Berth-Request-Id") == 0) {
            if (!r->request_id)
                r->request_id = value;
        } else if (strcasecmp(line, "Berth-Caller") == 0) {
            if (!r->caller)
                r->caller = value;
        } else if (strcasecmp(line, "Berth-Deadline-Ms") == 0) {
            r->deadline = value;
            r->deadline_count++;
        }
    }
    if (r->minor == 0 && !r->keep_alive)
        r->close = true; /* HTTP/1.0 keeps the connection only when asked to */
    if (has_te) {
        if (r->minor == 0) {
            r->close = true;
            answer_error(a, 400, "bad_request", "Transfer-Encoding is not allowed in HTTP/1.0");
            return 400;
        }
        /* Both framings sent: chunked wins, and the connection is not trusted further. */
        if (has_length)
            r->close = true;
        r->content_length = -1;
    }
    if (!has_length && !has_te)
        r->content_length = 0;
    return 0;
}

/* Reads the body into out (drops it when out is NULL). 0 when read; 413 when larger than the
 * limit (the rest is left unread: close the connection); 400 for broken chunked framing;
 * -1 when the connection failed. */
static int read_body(struct conn *c, struct http_request *r, struct buf *out)
{
    if (!r->chunked) {
        if (r->content_length > MAX_BODY_BYTES)
            return 413;
        return conn_read_exact(c, out, (size_t)r->content_length) == 0 ? 0 : -1;
    }
    size_t total = 0;
    for (;;) {
        const char *line;
        size_t len;
        int got = conn_read_line(c, 1024, &line, &len);
        if (got != 0)
            return got < 0 ? -1 : 400;
        size_t size = 0, i = 0;
        for (; i < len && hex_value(line[i]) >= 0; i++) {
            if (size > (SIZE_MAX >> 8))
                return 413;
            size = size * 16 + (size_t)hex_value(line[i]);
        }
        if (i == 0 || (i < len && line[i] != ';' && line[i] != ' ' && line[i] != '\t'))
            return 400;
        if (size == 0)
            break;
        if (size > MAX_BODY_BYTES - total)
            return 413;
        total += size;
        if (conn_read_exact(c, out, size) != 0)
            return -1;
        got = conn_read_line(c, 2, &line, &len); /* the CRLF after the data */
        if (got != 0 || len != 0)
            return got < 0 ? -1 : 400;
    }
    /* Trailer fields, ignored, up to the empty line. */
    for (size_t trailer_bytes = 0;;) {
        const char *line;
        size_t len;
        int got = conn_read_line(c, MAX_HEADER_BYTES, &line, &len);
        if (got != 0)
            return got < 0 ? -1 : 400;
        if (len == 0)
            return 0;
        trailer_bytes += len;
        if (trailer_bytes > MAX_HEADER_BYTES)
            return 400;
    }
}

/* Writes the response; false when the connection is gone. */
static bool send_answer(struct conn *c, const struct http_request *r, const struct answer *a,
                        bool close)
{
    struct buf out = {0};
    struct buf body = {0};
    if (a->status != 204) {
        if (a->body) {
            buf_add(&body, a->body, a->body_len);
        } else {
            buf_puts(&body, "{\"error\":{\"code\":");
            buf_json_string(&body, a->code, strlen(a->code));
            buf_puts(&body, ",\"message\":");
            buf_json_string(&body, a->message, strlen(a->message));
            buf_puts(&body, "}}");
        }
    }
    buf_printf(&out, "HTTP/1.1 %d %s\r\n", a->status, status_text(a->status));
    if (a->status != 204)
        buf_printf(&out, "Content-Type: application/json\r\nContent-Length: %zu\r\n", body.len);
    if (r->request_id)
        buf_printf(&out, "Berth-Request-Id: %s\r\n", r->request_id);
    if (a->allow)
        buf_printf(&out, "Allow: %s\r\n", a->allow);
    if (close)
        buf_puts(&out, "Connection: close\r\n");
    else if (r->minor == 0)
        buf_puts(&out, "Connection: keep-alive\r\n");
    buf_puts(&out, "\r\n");
    if (!(r->method && strcmp(r->method, "HEAD") == 0))
        buf_add(&out, body.data, body.len);
    bool ok = send_all(c->fd, out.data, out.len);
    buf_free(&out);
    buf_free(&body);
    return ok;
}

/* ---- routing and dispatch ---- */

enum route { ROUTE_NONE, ROUTE_HEALTH, ROUTE_DESCRIBE, ROUTE_INVOKE, ROUTE_HOOK };

/* The one non-empty segment after prefix, percent-decoded into name (its length in *len: a
 * decoded %00 stays part of the name, so "greet%00x" is not "greet"); false when absent. */
static bool path_param(const char *path, const char *prefix, char *name, size_t cap, size_t *len)
{
    size_t n = strlen(prefix);
    if (strncmp(path, prefix, n) != 0)
        return false;
    const char *seg = path + n;
    if (!*seg || strchr(seg, '/'))
        return false;
    size_t o = 0;
    for (const char *p = seg; *p; p++) {
        char ch = *p;
        if (ch == '%') {
            if (hex_value(p[1]) < 0 || hex_value(p[2]) < 0)
                return false;
            ch = (char)(hex_value(p[1]) * 16 + hex_value(p[2]));
            p += 2;
        }
        if (o + 1 >= cap)
            return false;
        name[o++] = ch;
    }
    name[o] = '\0';
    *len = o;
    return true;
}

/* Berth-Deadline-Ms: absent → no deadline (0); optional spaces around ASCII digits; a number
 * too large to hold → no deadline. Returns false for a malformed or repeated header. */
static bool parse_deadline(const struct http_request *r, int64_t now, int64_t *deadline,
                           bool *expired)
{
    *deadline = 0;
    *expired = false;
    if (r->deadline_count == 0)
        return true;
    if (r->deadline_count > 1)
        return false;
    const char *v = r->deadline;
    while (*v == ' ' || *v == '\t')
        v++;
    uint64_t ms = 0;
    bool overflow = false;
    const char *d = v;
    for (; is_digit(*d); d++) {
        if (ms > (UINT64_MAX - 9) / 10)
            overflow = true;
        else
            ms = ms * 10 + (uint64_t)(*d - '0');
    }
    if (d == v)
        return false;
    while (*d == ' ' || *d == '\t')
        d++;
    if (*d)
        return false;
    if (ms == 0 && !overflow) {
        *expired = true;
        return true;
    }
    if (!overflow && ms < (uint64_t)(INT64_MAX / 2))
        *deadline = now + (int64_t)ms;
    return true;
}

/* Runs a capability or hook on a body that was read whole, in the protocol's order. */
static void dispatch(enum route route, int index, const struct request *req, const char *body,
                     size_t body_len, struct answer *a, struct reply *reply)
{
    struct json_value root, event = {0};
    if (!json_parse(body, body_len, &root)) {
        answer_error(a, 400, "malformed_json", "the request body is not valid JSON");
        return;
    }
    if (route == ROUTE_HOOK) {
        bool found = false;
        struct json_value key, value;
        size_t pos = 0;
        if (root.type != JSON_OBJECT) {
            answer_error(a, 400, "invalid_input", "a hook body must be an object like {\"event\": {...}}");
            return;
        }
        while (json_object_next(&root, &pos, &key, &value))
            if (json_string_is(&key, "event")) {
                event = value;
                found = true;
            }
        if (!found) {
            answer_error(a, 400, "invalid_input", "the hook body has no \"event\"; send {\"event\": {...}}");
            return;
        }
        if (event.type != JSON_OBJECT) {
            answer_error(a, 400, "invalid_input", "the hook body's \"event\" must be a JSON object");
            return;
        }
    }

    reply->status = 200;
    if (route == ROUTE_INVOKE)
        capabilities[index].handle(req, &root, reply);
    else
        hooks[index].handle(req, &event, reply);

    /* C cannot cancel a handler: the deadline is checked once it returns, and an answer
     * that came too late is replaced by 504 (the caller stopped waiting). */
    if (req->deadline && monotonic_ms() >= req->deadline) {
        answer_error(a, 504, "deadline_exceeded", "the request's deadline ran out before the plugin answered");
        return;
    }
    if (reply->status >= 300) {
        answer_error(a, reply->status, reply->code[0] ? reply->code : "internal", "%s", reply->message);
        return;
    }
    if (route == ROUTE_HOOK && strcmp(hooks[index].mode, "observe") == 0) {
        a->status = 204;
        a->body = "";
        a->body_len = 0;
        return;
    }
    struct json_value check;
    if (!json_parse(reply->body.data ? reply->body.data : "", reply->body.len, &check) ||
        (route == ROUTE_HOOK && check.type != JSON_OBJECT)) {
        answer_error(a, 500, "internal", route == ROUTE_HOOK ? "the hook gave no action"
                                                              : "the capability's output is not JSON");
        return;
    }
    a->status = 200;
    a->body = reply->body.data;
    a->body_len = reply->body.len;
}

/* Serves one request. Returns whether the connection can carry another one. */
static bool serve_request(struct conn *c)
{
    struct http_request r = {.content_length = -1};
    struct answer a = {.status = 0};
    struct reply reply = {.status = 200};
    struct buf body = {0};
    int64_t started = monotonic_ms();
    bool close = false;
    enum route route = ROUTE_NONE;
    int index = -1;
    int64_t deadline = 0;

    c->timed_out = false;
    int head = read_head(c, &r, &a);
    if (head < 0)
        return false;
    if (head > 0) {
        c->linger = send_answer(c, &r, &a, true);
        log_line(LOG_INFO, r.request_id, head == 408 ? "the request head arrived too slowly"
                                                      : "refused a request that is not valid HTTP/1.1", NULL);
        return false;
    }
    c->until = monotonic_ms() + IO_TIMEOUT_S * 1000; /* for the whole body */

    /* The path, without a query, from origin-form or absolute-form. */
    const char *target = r.target;
    if (strncasecmp(target, "http://", 7) == 0 || strncasecmp(target, "https://", 8) == 0) {
        target = strchr(strstr(target, "//") + 2, '/');
        if (!target)
            target = "/";
    }
    size_t plen = strcspn(target, "?#");
    memcpy(r.path, target, plen);
    r.path[plen] = '\0';

    /* 1. path, 2. method, 3. capability or hook name. */
    char name[HEAD_CAP];
    size_t name_len = 0;
    const char *allow = NULL, *method_needed = NULL;
    if (strcmp(r.path, "/healthz") == 0) {
        route = ROUTE_HEALTH;
        method_needed = "GET";
        allow = "GET, HEAD";
    } else if (strcmp(r.path, "/v1/describe") == 0) {
        route = ROUTE_DESCRIBE;
        method_needed = "GET";
        allow = "GET, HEAD";
    } else if (path_param(r.path, "/v1/invoke/", name, sizeof name, &name_len)) {
        route = ROUTE_INVOKE;
        method_needed = "POST";
        allow = "POST";
    } else if (path_param(r.path, "/v1/hooks/", name, sizeof name, &name_len)) {
        route = ROUTE_HOOK;
        method_needed = "POST";
        allow = "POST";
    }
    if (route == ROUTE_NONE) {
        answer_error(&a, 404, "not_found",
                     "no such endpoint; protocol v1 serves /healthz, /v1/describe, "
                     "/v1/invoke/{capability} and /v1/hooks/{hook}");
    } else if (!(strcmp(r.method, method_needed) == 0 ||
                 (strcmp(method_needed, "GET") == 0 && strcmp(r.method, "HEAD") == 0))) {
        answer_error(&a, 405, "method_not_allowed", "%s takes %s, not %s", r.path, allow, r.method);
        a.allow = allow;
    } else if (route == ROUTE_INVOKE) {
        for (size_t i = 0; i < N_CAPABILITIES; i++)
            if (strlen(capabilities[i].name) == name_len && memcmp(capabilities[i].name, name, name_len) == 0)
                index = (int)i;
        if (index < 0) {
            struct buf quoted = {0};
            buf_json_string(&quoted, name, name_len);
            answer_error(&a, 404, "unknown_capability",
                         "this plugin has no capability %.200s; GET /v1/describe lists the ones it has",
                         quoted.data);
            buf_free(&quoted);
        }
    } else if (route == ROUTE_HOOK) {
        for (size_t i = 0; i < N_HOOKS; i++)
            if (strlen(hooks[i].name) == name_len && memcmp(hooks[i].name, name, name_len) == 0)
                index = (int)i;
        if (index < 0) {
            struct buf quoted = {0};
            buf_json_string(&quoted, name, name_len);
            answer_error(&a, 404, "unknown_hook",
                         "this plugin does not subscribe to hook %.200s; GET /v1/describe lists its hooks",
                         quoted.data);
            buf_free(&quoted);
        }
    }
    /* 4. and 5. the deadline header (invoke and hooks only). */
    if (!a.status && (route == ROUTE_INVOKE || route == ROUTE_HOOK)) {
        bool expired;
        if (!parse_deadline(&r, started, &deadline, &expired))
            answer_error(&a, 400, "bad_request",
                         "the Berth-Deadline-Ms header must be sent once, as a whole number of milliseconds");
        else if (expired)
            answer_error(&a, 504, "deadline_exceeded", "the request's deadline of 0 ms had already run out");
    }

    /* 6. the body: read whole (also after an early error, to keep the connection usable),
     * unless it is too large or the client waits for 100 Continue that an error replaces. */
    bool wants_body = !a.status && (route == ROUTE_INVOKE || route == ROUTE_HOOK);
    if (r.content_length > MAX_BODY_BYTES || (a.status && r.expect_continue)) {
        if (!a.status)
            answer_error(&a, 413, "payload_too_large",
                         "the request body is larger than this plugin's limit of %d bytes", MAX_BODY_BYTES);
        close = true;
    } else {
        if (r.expect_continue && (r.chunked || r.content_length > 0)) {
            static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
            if (!send_all(c->fd, cont, sizeof cont - 1))
                goto out_silent;
        }
        int got = read_body(c, &r, wants_body ? &body : NULL);
        if (got < 0)
            goto out_silent;
        if (got == 413) {
            if (!a.status)
                answer_error(&a, 413, "payload_too_large",
                             "the request body is larger than this plugin's limit of %d bytes", MAX_BODY_BYTES);
            close = true;
        } else if (got == 400) {
            if (!a.status)
                answer_error(&a, 400, "bad_request", "the chunked request body is malformed");
            close = true;
        }
    }

    if (!a.status) {
        if (route == ROUTE_HEALTH) {
            a.status = 200;
            a.body = "{\"status\":\"ok\"}";
            a.body_len = strlen(a.body);
        } else if (route == ROUTE_DESCRIBE) {
            a.status = 200;
            a.body = describe_json.data;
            a.body_len = describe_json.len;
        } else if (deadline && monotonic_ms() >= deadline) {
            answer_error(&a, 504, "deadline_exceeded", "the request's deadline ran out while its body arrived");
        } else {
            struct request req = {r.request_id ? r.request_id : "", r.caller ? r.caller : "", deadline};
            dispatch(route, index, &req, body.data ? body.data : "", body.len, &a, &reply);
        }
    }

    close = close || r.close || is_stopping();
    bool sent = send_answer(c, &r, &a, close);
    c->linger = sent && close;

    struct buf fields = {0};
    buf_puts(&fields, "\"method\":");
    buf_json_string(&fields, r.method, strlen(r.method));
    buf_puts(&fields, ",\"path\":");
    buf_json_string(&fields, r.path, strlen(r.path));
    buf_printf(&fields, ",\"status\":%d,\"elapsed_ms\":%lld", a.status, (long long)(monotonic_ms() - started));
    if (!a.body) {
        buf_puts(&fields, ",\"code\":");
        buf_json_string(&fields, a.code, strlen(a.code));
    }
    enum level level = a.status >= 500 ? LOG_WARN : route == ROUTE_HEALTH && a.status == 200 ? LOG_DEBUG : LOG_INFO;
    log_line(level, r.request_id, "answered", fields.data);
    buf_free(&fields);
    buf_free(&reply.body);
    buf_free(&body);
    return sent && !close;

out_silent:
    buf_free(&reply.body);
    buf_free(&body);
    return false;
}

/* Closing a socket with unread input makes the kernel send a reset, which can destroy the
 * answer before the client reads it (a 413 sent while the body still arrives): close our side
 * first and drop what still comes, for a second at most. */
static void linger_close(int fd)
{
    char sink[4096];
    int64_t until = monotonic_ms() + 1000;
    shutdown(fd, SHUT_WR);
    for (int64_t now = monotonic_ms(); now < until; now = monotonic_ms()) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        if (poll(&pfd, 1, (int)(until - now)) <= 0)
            break;
        ssize_t n = recv(fd, sink, sizeof sink, MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN))
            break;
    }
}

static void *connection_thread(void *arg)
{
    struct conn *c = arg;
    struct slot *s = c->slot;
    bool served = false;
    int64_t accepted = monotonic_ms();
    for (;;) {
        /* The head must arrive within HEAD_TIMEOUT_MS: counted from accept for the first
         * request, from its first byte for the next ones. */
        c->until = (served ? monotonic_ms() : accepted) + HEAD_TIMEOUT_MS;
        if (c->start == c->end) {
            /* Idle: wait for the next request; SIGTERM or an eviction shuts the socket down. */
            pthread_mutex_lock(&slots_mu);
            bool leave = s->closing || (stopping && !has_pending_bytes(c->fd));
            s->state = SLOT_IDLE;
            s->served = served;
            s->last_use = monotonic_ms();
            pthread_cond_broadcast(&slots_changed);
            pthread_mutex_unlock(&slots_mu);
            if (leave)
                break;
            /* A new connection must start its first request in time (and can be evicted
             * after NEW_IDLE_EVICT_MS when all places are taken). */
            struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
            int ready;
            do {
                int64_t left = c->until - monotonic_ms();
                ready = served ? poll(&pfd, 1, -1) : left <= 0 ? 0 : poll(&pfd, 1, (int)left);
            } while (ready < 0 && errno == EINTR);
            if (ready == 0)
                break;
            if (served)
                c->until = monotonic_ms() + HEAD_TIMEOUT_MS;
        }
        pthread_mutex_lock(&slots_mu);
        bool leave = s->closing;
        if (!leave)
            s->state = SLOT_BUSY;
        pthread_mutex_unlock(&slots_mu);
        if (leave || !serve_request(c))
            break;
        served = true;
    }
    if (c->linger)
        linger_close(c->fd);
    close(c->fd);
    pthread_mutex_lock(&slots_mu);
    s->state = SLOT_FREE;
    s->closing = false;
    s->served = false;
    live_slots--;
    pthread_cond_broadcast(&slots_changed);
    pthread_mutex_unlock(&slots_mu);
    free(c);
    return NULL;
}

static void *signal_thread(void *arg)
{
    sigset_t *set = arg;
    int sig = 0;
    sigwait(set, &sig);
    pthread_mutex_lock(&slots_mu);
    stopping = true;
    pthread_cond_broadcast(&slots_changed);
    pthread_mutex_unlock(&slots_mu);
    char buf[64];
    snprintf(buf, sizeof buf, "\"signal\":\"%s\"", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    log_line(LOG_INFO, NULL, "shutting down: finishing requests in flight", buf);
    ssize_t ignored = write(wake_pipe[1], "x", 1);
    (void)ignored;
    return NULL;
}

/* A decimal environment variable within [min, max], or fallback when unset. */
static long env_number(const char *name, long fallback, long min, long max, bool *ok)
{
    const char *v = getenv(name);
    *ok = true;
    if (!v)
        return fallback;
    char *end;
    errno = 0;
    long n = strtol(v, &end, 10);
    while (*end == ' ')
        end++;
    if (errno || end == v || *end || n < min || n > max) {
        *ok = false;
        return fallback;
    }
    return n;
}

static void build_describe(void)
{
    struct buf d = {0};
    buf_puts(&d, "{\"name\":");
    buf_json_string(&d, PLUGIN_NAME, strlen(PLUGIN_NAME));
    buf_puts(&d, ",\"version\":");
    buf_json_string(&d, PLUGIN_VERSION, strlen(PLUGIN_VERSION));
    buf_puts(&d, ",\"capabilities\":[");
    for (size_t i = 0; i < N_CAPABILITIES; i++) {
        buf_puts(&d, i ? ",{\"name\":" : "{\"name\":");
        buf_json_string(&d, capabilities[i].name, strlen(capabilities[i].name));
        buf_puts(&d, "}");
    }
    buf_puts(&d, "],\"hooks\":[");
    for (size_t i = 0; i < N_HOOKS; i++) {
        buf_puts(&d, i ? ",{\"name\":" : "{\"name\":");
        buf_json_string(&d, hooks[i].name, strlen(hooks[i].name));
        buf_puts(&d, ",\"mode\":");
        buf_json_string(&d, hooks[i].mode, strlen(hooks[i].mode));
        buf_puts(&d, "}");
    }
    buf_puts(&d, "]}");
    describe_json = d;
}

int main(void)
{
    const char *level = getenv("BERTH_LOG");
    if (level && (strcasecmp(level, "debug") == 0 || strcasecmp(level, "trace") == 0))
        log_level = LOG_DEBUG;
    else if (level && (strcasecmp(level, "warn") == 0 || strcasecmp(level, "warning") == 0))
        log_level = LOG_WARN;
    else if (level && strcasecmp(level, "error") == 0)
        log_level = LOG_ERROR;

    bool ok;
    char fields[256];
    long port = env_number("BERTH_PORT", DEFAULT_PORT, 1, 65535, &ok);
    if (!ok) {
        log_line(LOG_ERROR, NULL, "BERTH_PORT is not a port number (use 1-65535, e.g. 8080)", NULL);
        return 1;
    }
    int max_concurrency = (int)env_number("BERTH_MAX_CONCURRENCY", DEFAULT_MAX_CONCURRENCY, 1, 4096, &ok);
    if (!ok) {
        log_line(LOG_WARN, NULL, "BERTH_MAX_CONCURRENCY is not a number from 1 to 4096; using 16", NULL);
        max_concurrency = DEFAULT_MAX_CONCURRENCY;
    }
    max_slots = max_concurrency + SPARE_CONNECTIONS;
    /* Each connection is a thread, and threads count against the pids limit: keep room for
     * the main and signal threads. */
    long pids = env_number("BERTH_PIDS", 0, 1, INT_MAX, &ok);
    if (ok && pids > 0 && max_slots > pids - 4) {
        max_slots = pids > 5 ? (int)pids - 4 : 1;
        snprintf(fields, sizeof fields, "\"pids\":%ld,\"max_connections\":%d", pids, max_slots);
        if (max_slots < max_concurrency / 2)
            log_line(LOG_WARN, NULL, "BERTH_PIDS leaves room for far fewer connection threads than "
                                     "BERTH_MAX_CONCURRENCY; raise spec.resources.pids", fields);
        else
            log_line(LOG_INFO, NULL, "connections limited by BERTH_PIDS", fields);
    }
    for (size_t i = 0; i < N_HOOKS; i++)
        if (strcmp(hooks[i].mode, "filter") != 0 && strcmp(hooks[i].mode, "observe") != 0) {
            log_line(LOG_ERROR, NULL, "a hook's mode must be \"filter\" or \"observe\"", NULL);
            return 1;
        }
    build_describe();
    slots = calloc((size_t)max_slots, sizeof *slots);
    if (!slots)
        out_of_memory();

    pthread_condattr_t cattr;
    pthread_condattr_init(&cattr);
    pthread_condattr_setclock(&cattr, CLOCK_MONOTONIC);
    pthread_cond_init(&slots_changed, &cattr);

    /* SIGTERM and SIGINT are taken by one thread with sigwait; every other thread blocks them. */
    static sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGTERM);
    sigaddset(&stop_signals, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);
    signal(SIGPIPE, SIG_IGN);
    if (pipe(wake_pipe) != 0) {
        log_line(LOG_ERROR, NULL, "could not create a pipe", NULL);
        return 1;
    }

    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                               .sin_addr.s_addr = htonl(INADDR_ANY)};
    if (lfd < 0 || setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(lfd, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(lfd, 128) != 0) {
        snprintf(fields, sizeof fields, "\"port\":%ld,\"error\":\"%s\"", port, strerror(errno));
        log_line(LOG_ERROR, NULL, "could not listen", fields);
        return 1;
    }
    fcntl(lfd, F_SETFL, fcntl(lfd, F_GETFL) | O_NONBLOCK);

    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, THREAD_STACK_BYTES);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_t signals;
    if (pthread_create(&signals, &attr, signal_thread, &stop_signals) != 0) {
        log_line(LOG_ERROR, NULL, "could not start the signal thread", NULL);
        return 1;
    }
    snprintf(fields, sizeof fields, "\"plugin\":\"%s\",\"version\":\"%s\",\"port\":%ld,\"max_concurrency\":%d,"
             "\"max_connections\":%d",
             PLUGIN_NAME, PLUGIN_VERSION, port, max_concurrency, max_slots);
    log_line(LOG_INFO, NULL, "listening", fields);

    for (;;) {
        struct pollfd pfd[2] = {{.fd = lfd, .events = POLLIN}, {.fd = wake_pipe[0], .events = POLLIN}};
        if (poll(pfd, 2, -1) < 0 && errno != EINTR)
            break;
        if (is_stopping())
            break;
        if (!(pfd[0].revents & POLLIN))
            continue;
        /* Wait for a free slot; an idle keep-alive connection gives its place up. */
        pthread_mutex_lock(&slots_mu);
        while (live_slots >= max_slots && !stopping) {
            int64_t now = monotonic_ms();
            evict_idle_locked(now);
            /* Look again soon: a silent new connection becomes evictable with time. */
            int64_t at = now + 250;
            struct timespec until = {.tv_sec = at / 1000, .tv_nsec = (at % 1000) * 1000000};
            pthread_cond_timedwait(&slots_changed, &slots_mu, &until);
        }
        bool stop = stopping;
        pthread_mutex_unlock(&slots_mu);
        if (stop)
            break;

        int fd = accept(lfd, NULL, NULL);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOMEM || errno == ENOBUFS) {
                log_line(LOG_WARN, NULL, "could not accept a connection: out of descriptors or memory", NULL);
                nanosleep(&(struct timespec){.tv_nsec = 100 * 1000 * 1000}, NULL);
            }
            continue;
        }
        struct timeval tv = {.tv_sec = IO_TIMEOUT_S};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct conn *c = malloc(sizeof *c);
        if (!c) {
            close(fd);
            continue;
        }
        c->fd = fd;
        c->slot = NULL;
        c->linger = false;
        c->until = 0;
        c->timed_out = false;
        c->start = c->end = 0;
        pthread_mutex_lock(&slots_mu);
        for (int i = 0; i < max_slots; i++)
            if (slots[i].state == SLOT_FREE) {
                c->slot = &slots[i];
                break;
            }
        if (!c->slot) { /* cannot happen: live_slots < max_slots */
            pthread_mutex_unlock(&slots_mu);
            close(fd);
            free(c);
            continue;
        }
        c->slot->state = SLOT_BUSY;
        c->slot->fd = fd;
        c->slot->closing = false;
        live_slots++;
        pthread_mutex_unlock(&slots_mu);
        pthread_t t;
        if (pthread_create(&t, &attr, connection_thread, c) != 0) {
            log_line(LOG_WARN, NULL, "could not start a thread for a connection", NULL);
            close(fd);
            pthread_mutex_lock(&slots_mu);
            c->slot->state = SLOT_FREE;
            live_slots--;
            pthread_mutex_unlock(&slots_mu);
            free(c);
        }
    }

    /* Shutdown: stop accepting, close idle connections, let requests in flight finish. */
    close(lfd);
    int64_t give_up = monotonic_ms() + DRAIN_TIMEOUT_MS;
    pthread_mutex_lock(&slots_mu);
    for (int i = 0; i < max_slots; i++)
        if (slots[i].state == SLOT_IDLE && !has_pending_bytes(slots[i].fd))
            close_idle_locked(&slots[i]);
    bool drained = true;
    while (live_slots > 0) {
        struct timespec until = {.tv_sec = give_up / 1000, .tv_nsec = (give_up % 1000) * 1000000};
        if (pthread_cond_timedwait(&slots_changed, &slots_mu, &until) == ETIMEDOUT) {
            drained = live_slots == 0;
            break;
        }
    }
    pthread_mutex_unlock(&slots_mu);
    if (!drained) {
        snprintf(fields, sizeof fields, "\"drain_ms\":%d", DRAIN_TIMEOUT_MS);
        log_line(LOG_WARN, NULL, "requests still in flight after the drain timeout; exiting anyway", fields);
    } else {
        log_line(LOG_INFO, NULL, "stopped", NULL);
    }
    _exit(0);
}
