// Every call that may longjmp (lua_error, luaL_check*, allocation) is made here, in C, so no
// longjmp ever crosses a Swift frame. See LuaBridge.h.
#include "LuaBridge.h"

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

// MARK: - Per-state data, reached through the allocator's user data

typedef struct {
    intptr_t *memory;               // [used, peak, limit]
    int stopped;                    // sticky: the run's time limit passed or it was cancelled
    char stopMessage[256];
    void *host;
    KiriDispatch dispatch;
    KiriHandleRelease releaseHandle;
    KiriOutput output;
    KiriInterrupt interrupt;
    char *scratch;                  // result strings, reused between calls
    size_t scratchCapacity;
    size_t pendingTensorBytes;      // new tensor bytes not yet told to the collector
    int warnings;                   // how many warnings were logged (capped)
    int warningContinued;
} KiriState;

static KiriState *state_of(lua_State *L) {
    void *ud = NULL;
    lua_getallocf(L, &ud);
    return (KiriState *)ud;
}

// Registry keys: addresses of these statics, so lookups never allocate a string.
static const char API_KEY = 0, METHODS_KEY = 0, META_KEY = 0, HOST_KEY = 0, ENV_KEY = 0;

static int charge(KiriState *S, size_t bytes) {
    intptr_t *m = S->memory;
    if ((intptr_t)bytes > m[2] - m[0]) return 0;
    m[0] += (intptr_t)bytes;
    if (m[0] > m[1]) m[1] = m[0];
    return 1;
}

/// Lua's allocator: Lua's own bytes count against the same cap as tensor bytes. Returning NULL
/// makes Lua raise "not enough memory" (after an emergency collection).
static void *kiri_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
    KiriState *S = ud;
    size_t old = ptr ? osize : 0;   // with ptr == NULL, osize encodes an object type, not a size
    if (nsize == 0) {
        free(ptr);
        S->memory[0] -= (intptr_t)old;
        return NULL;
    }
    if (nsize > old && !charge(S, nsize - old)) return NULL;
    void *grown = realloc(ptr, nsize);
    if (!grown) {
        if (nsize > old) S->memory[0] -= (intptr_t)(nsize - old);
        return NULL;
    }
    if (nsize < old) S->memory[0] -= (intptr_t)(old - nsize);
    return grown;
}

enum { HOOK_INTERVAL = 1000, GC_BATCH = 1 << 20 };   // GC_BATCH: 1 MiB was fastest of 64 KiB–4 MiB

static void time_hook(lua_State *L, lua_Debug *ar);

/// Whether the run must stop: sticky once the host's interrupt has said so.
static int must_stop(lua_State *L) {
    KiriState *S = state_of(L);
    if (S->stopped) return 1;
    if (!S->interrupt(S->host, S->stopMessage, sizeof S->stopMessage)) return 0;
    S->stopped = 1;
    lua_sethook(L, time_hook, LUA_MASKCOUNT, 1);
    return 1;
}

/// Raises the stop's message, which carries no position: the traceback says where.
static int raise_stop(lua_State *L) {
    lua_pushstring(L, state_of(L)->stopMessage);
    return lua_error(L);
}

/// The time limit (and cancellation). Once tripped it is sticky: the hook then fires on every instruction and
/// raises again, so `pcall` cannot swallow it. Hooks are inherited by coroutines.
/// Raising from a hook leaves hooks off (Lua's internal `allowhook`) until a protected call restores
/// them: for the message handler that error runs, and for the thread it kills, so the __close
/// handlers that closing that coroutine would run. The prelude asks `host.stopped` and runs
/// neither once the run has stopped.
static void time_hook(lua_State *L, lua_Debug *ar) {
    (void)ar;
    if (must_stop(L)) raise_stop(L);
}

/// Warnings (errors in finalizers among them) go to stderr, capped so they cannot flood it.
static void kiri_warn(void *ud, const char *message, int tocont) {
    KiriState *S = ud;
    enum { MAX_WARNINGS = 20 };
    if (!S->warningContinued && message[0] == '@') return;   // control messages ("@on"/"@off")
    int first = !S->warningContinued;
    S->warningContinued = tocont;
    if (first && ++S->warnings > MAX_WARNINGS) {
        if (S->warnings == MAX_WARNINGS + 1) fputs("kiri: warning: further warnings suppressed\n", stderr);
        return;
    }
    if (S->warnings > MAX_WARNINGS) return;
    if (first) fputs("kiri: warning: ", stderr);
    fputs(message, stderr);
    if (!tocont) fputc('\n', stderr);
}

// MARK: - Tensor userdata

enum { TENSOR_MAGIC = 0x4b495249 };   // "KIRI"
typedef struct { uint32_t magic; uint32_t closed; void *handle; } TensorBox;

/// Scripts cannot make full userdata (no io, no newproxy), so every one in a state is Kiri's: a tensor
/// box, told apart by its magic. This runs on every tensor argument, so it stays this small.
static TensorBox *tensor_box(lua_State *L, int index) {
    if (lua_type(L, index) != LUA_TUSERDATA) return NULL;
    TensorBox *box = lua_touserdata(L, index);
    return box->magic == TENSOR_MAGIC ? box : NULL;
}

static void push_empty_tensor(lua_State *L) {
    TensorBox *box = lua_newuserdatauv(L, sizeof(TensorBox), 0);
    box->magic = TENSOR_MAGIC;
    box->closed = 0;
    box->handle = NULL;
    lua_rawgetp(L, LUA_REGISTRYINDEX, &META_KEY);
    lua_setmetatable(L, -2);
}

static int tensor_gc(lua_State *L) {
    TensorBox *box = tensor_box(L, 1);
    if (box && box->handle) {
        state_of(L)->releaseHandle(box->handle, 0);
        box->handle = NULL;
    }
    return 0;
}

/// `local x <close> = ...` frees the tensor's memory at scope exit instead of at the next GC cycle.
static int tensor_close(lua_State *L) {
    TensorBox *box = tensor_box(L, 1);
    if (box && box->handle) {
        state_of(L)->releaseHandle(box->handle, 1);
        box->handle = NULL;
        box->closed = 1;
    }
    return 0;
}

// MARK: - The trampoline

static void push_nested(lua_State *L, const float *data, const int *shape, int rank) {
    if (rank == 0) {
        lua_pushnumber(L, data[0]);
        return;
    }
    size_t stride = 1;
    for (int d = 1; d < rank; d++) stride *= (size_t)shape[d];
    luaL_checkstack(L, 3, "nested table too deep");
    lua_createtable(L, shape[0], 0);
    for (int i = 0; i < shape[0]; i++) {
        push_nested(L, data + (size_t)i * stride, shape + 1, rank - 1);
        lua_rawseti(L, -2, i + 1);
    }
}

/// Pairs of (size_t length, bytes) strings, key then value, as one table.
static void push_string_table(lua_State *L, const char *bytes, size_t length) {
    lua_newtable(L);
    const char *end = bytes + length;
    while (bytes < end) {
        for (int part = 0; part < 2; part++) {
            size_t count;
            memcpy(&count, bytes, sizeof count);
            lua_pushlstring(L, bytes + sizeof count, count);
            bytes += sizeof count + count;
        }
        lua_rawset(L, -3);
    }
}

/// Upvalue 1 packs what a trampoline stands for, so one read serves every call.
enum { TENSOR_INDEX_FLAG = 1, RESERVED_SHIFT = 1, RESERVED_MASK = 0x7f, FUNCTION_SHIFT = 8 };

static int trampoline(lua_State *L) {
    lua_Integer packed = lua_tointegerx(L, lua_upvalueindex(1), NULL);
    // Tensor __index: t.name finds a method (upvalue 2); only t[i] reaches Swift.
    if ((packed & TENSOR_INDEX_FLAG) && lua_type(L, 2) == LUA_TSTRING) {
        lua_pushvalue(L, 2);
        lua_rawget(L, lua_upvalueindex(2));
        return 1;
    }
    KiriState *S = state_of(L);
    if (S->stopped) return raise_stop(L);   // once stopped, no host call does anything more
    KiriCall call;
    call.argumentCount = lua_gettop(L);
    call.functionId = (int)(packed >> FUNCTION_SHIFT);
    call.status = KIRI_OK;
    call.argument = 0;
    call.message[0] = 0;
    call.resultCount = 0;
    call.reservedTensors = (int)((packed >> RESERVED_SHIFT) & RESERVED_MASK);
    call.usedTensors = 0;
    call.newTensorBytes = 0;
    call.heldStringBytes = 0;
    luaL_checkstack(L, call.reservedTensors + 32, "too many arguments");
    // Userdata for new tensors exist before Swift runs, so a failed allocation here cannot leak one.
    for (int i = 0; i < call.reservedTensors; i++) push_empty_tensor(L);

    S->dispatch(L, &call);

    if (call.status == KIRI_ARGUMENT_ERROR) return luaL_argerror(L, call.argument, call.message);
    if (call.status != KIRI_OK) return luaL_error(L, "%s", call.message);
    lua_settop(L, call.argumentCount + call.reservedTensors);
    for (int r = 0; r < call.resultCount; r++) {
        KiriResult *result = &call.results[r];
        switch (result->kind) {
        case KIRI_RESULT_NIL: lua_pushnil(L); break;
        case KIRI_RESULT_NUMBER: lua_pushnumber(L, result->number); break;
        case KIRI_RESULT_INTEGER: lua_pushinteger(L, result->integer); break;
        case KIRI_RESULT_BOOLEAN: lua_pushboolean(L, (int)result->integer); break;
        case KIRI_RESULT_STACK: lua_pushvalue(L, result->stackIndex); break;
        case KIRI_RESULT_TENSOR: lua_pushvalue(L, result->stackIndex); break;
        case KIRI_RESULT_STRING: lua_pushlstring(L, S->scratch + result->offset, result->length); break;
        case KIRI_RESULT_NUMBERS: {
            const double *values = (const double *)(S->scratch + result->offset);
            lua_createtable(L, (int)result->length, 0);
            for (size_t i = 0; i < result->length; i++) {
                lua_pushnumber(L, values[i]);
                if (values[i] == floor(values[i]) && fabs(values[i]) < 9007199254740992.0) {
                    lua_pop(L, 1);
                    lua_pushinteger(L, (lua_Integer)values[i]);
                }
                lua_rawseti(L, -2, (lua_Integer)i + 1);
            }
            break;
        }
        case KIRI_RESULT_NESTED: push_nested(L, result->floats, result->shape, result->rank); break;
        case KIRI_RESULT_STRING_TABLE: push_string_table(L, S->scratch + result->offset, result->length); break;
        }
    }
    // Tensor bytes live outside Lua's heap; adding them to the GC debt makes the collector keep pace.
    // Batched, so a sampler loop pays for one collection per GC_BATCH bytes rather than one per tensor.
    S->pendingTensorBytes += call.newTensorBytes;
    if (S->pendingTensorBytes >= GC_BATCH) {
        size_t kilobytes = S->pendingTensorBytes / 1024;
        S->pendingTensorBytes = 0;
        lua_gc(L, LUA_GCSTEP, kilobytes > 1 << 30 ? 1 << 30 : (int)kilobytes);
    }
    return call.resultCount;
}

// MARK: - Reading arguments (none of these can raise)

int kiri_arg_type(lua_State *L, int index) { return lua_type(L, index); }

const char *kiri_arg_typename(lua_State *L, int index) {
    if (tensor_box(L, index)) return "Tensor";
    return lua_typename(L, lua_type(L, index));
}

int kiri_arg_number(lua_State *L, int index, double *out) {
    if (lua_type(L, index) != LUA_TNUMBER) return 0;
    *out = lua_tonumberx(L, index, NULL);
    return 1;
}

int kiri_arg_integer(lua_State *L, int index, int64_t *out) {
    if (lua_type(L, index) != LUA_TNUMBER) return 0;
    int exact = 0;
    lua_Integer value = lua_tointegerx(L, index, &exact);
    if (!exact) return 0;
    *out = value;
    return 1;
}

int kiri_arg_boolean(lua_State *L, int index) { return lua_toboolean(L, index); }

void *kiri_arg_tensor(lua_State *L, int index) {
    TensorBox *box = tensor_box(L, index);
    return box ? box->handle : NULL;
}

int kiri_arg_is_closed_tensor(lua_State *L, int index) {
    TensorBox *box = tensor_box(L, index);
    return box && box->closed;
}

const char *kiri_arg_string(lua_State *L, int index, size_t *length) {
    if (lua_type(L, index) != LUA_TSTRING) return NULL;
    return lua_tolstring(L, index, length);
}

size_t kiri_table_length(lua_State *L, int index) { return (size_t)lua_rawlen(L, index); }

int kiri_table_push(lua_State *L, int index, int64_t i) {
    if (!lua_checkstack(L, 1)) return KIRI_TNONE;
    return lua_rawgeti(L, index, i);
}

int kiri_table_next(lua_State *L, int index) { return lua_next(L, index); }

int kiri_push_nil(lua_State *L) {
    if (!lua_checkstack(L, 2)) return 0;
    lua_pushnil(L);
    return 1;
}

void kiri_pop(lua_State *L, int count) { lua_pop(L, count); }

// MARK: - Describing results

static KiriResult *next_result(KiriCall *call, KiriResultKind kind) {
    if (call->resultCount >= KIRI_MAX_RESULTS) return NULL;
    KiriResult *result = &call->results[call->resultCount++];
    result->kind = kind;
    return result;
}

void kiri_result_nil(KiriCall *call) { next_result(call, KIRI_RESULT_NIL); }

void kiri_result_number(KiriCall *call, double value) {
    KiriResult *result = next_result(call, KIRI_RESULT_NUMBER);
    if (result) result->number = value;
}

void kiri_result_integer(KiriCall *call, int64_t value) {
    KiriResult *result = next_result(call, KIRI_RESULT_INTEGER);
    if (result) result->integer = value;
}

void kiri_result_boolean(KiriCall *call, int value) {
    KiriResult *result = next_result(call, KIRI_RESULT_BOOLEAN);
    if (result) result->integer = value != 0;
}

void kiri_result_stack(KiriCall *call, int index) {
    KiriResult *result = next_result(call, KIRI_RESULT_STACK);
    if (result) result->stackIndex = index;
}

int kiri_result_tensor(lua_State *L, KiriCall *call, void *handle, size_t bytes) {
    if (call->usedTensors >= call->reservedTensors || call->resultCount >= KIRI_MAX_RESULTS) return 0;
    int slot = call->argumentCount + 1 + call->usedTensors++;
    TensorBox *box = tensor_box(L, slot);
    box->handle = handle;
    KiriResult *result = next_result(call, KIRI_RESULT_TENSOR);
    result->stackIndex = slot;
    call->newTensorBytes += bytes;
    return 1;
}

static int scratch_reserve(lua_State *L, size_t needed) {
    KiriState *S = state_of(L);
    if (needed <= S->scratchCapacity) return 1;
    size_t capacity = needed < 4096 ? 4096 : needed + needed / 2;
    if (!charge(S, capacity - S->scratchCapacity)) return 0;
    char *grown = realloc(S->scratch, capacity);
    if (!grown) {
        S->memory[0] -= (intptr_t)(capacity - S->scratchCapacity);
        return 0;
    }
    S->scratch = grown;
    S->scratchCapacity = capacity;
    return 1;
}

/// Results share one scratch buffer; each takes the bytes after the previous one.
static size_t scratch_used(KiriCall *call) {
    size_t end = 0;
    for (int r = 0; r < call->resultCount; r++) {
        KiriResult *result = &call->results[r];
        if (result->kind == KIRI_RESULT_STRING || result->kind == KIRI_RESULT_STRING_TABLE) end = result->offset + result->length;
        if (result->kind == KIRI_RESULT_NUMBERS) end = result->offset + result->length * sizeof(double);
    }
    return (end + 7) & ~(size_t)7;
}

/// Copies `length` bytes after the previous results' into the scratch buffer, as a result of `kind`.
static KiriResult *scratch_result(lua_State *L, KiriCall *call, KiriResultKind kind, const void *bytes, size_t length) {
    size_t offset = scratch_used(call);
    if (call->resultCount >= KIRI_MAX_RESULTS || !scratch_reserve(L, offset + length)) return NULL;
    if (length > 0) memcpy(state_of(L)->scratch + offset, bytes, length);
    KiriResult *result = next_result(call, kind);
    result->offset = offset;
    result->length = length;
    return result;
}

int kiri_result_string(lua_State *L, KiriCall *call, const char *bytes, size_t length) {
    return scratch_result(L, call, KIRI_RESULT_STRING, bytes, length) != NULL;
}

int kiri_result_string_table(lua_State *L, KiriCall *call, const char *bytes, size_t length) {
    return scratch_result(L, call, KIRI_RESULT_STRING_TABLE, bytes, length) != NULL;
}

int kiri_result_numbers(lua_State *L, KiriCall *call, const double *values, size_t count) {
    KiriResult *result = scratch_result(L, call, KIRI_RESULT_NUMBERS, values, count * sizeof(double));
    if (result) result->length = count;    // counted in values, not bytes
    return result != NULL;
}

void kiri_result_nested(KiriCall *call, const float *data, const int *shape, int rank) {
    KiriResult *result = next_result(call, KIRI_RESULT_NESTED);
    if (!result) return;
    result->floats = data;
    result->rank = rank;
    for (int d = 0; d < rank && d < 8; d++) result->shape[d] = shape[d];
}

void kiri_fail(KiriCall *call, int argument, const char *message) {
    call->status = argument > 0 ? KIRI_ARGUMENT_ERROR : KIRI_ERROR;
    call->argument = argument;
    snprintf(call->message, sizeof call->message, "%s", message);
}

// MARK: - Host functions given to the sandbox prelude

/// print, to the host's output instead of C's stdout, so a host can capture it.
static int host_print(lua_State *L) {
    KiriState *S = state_of(L);
    if (S->stopped) return raise_stop(L);
    int count = lua_gettop(L);
    luaL_Buffer buffer;
    luaL_buffinit(L, &buffer);
    for (int i = 1; i <= count; i++) {
        if (i > 1) luaL_addchar(&buffer, '\t');
        luaL_tolstring(L, i, NULL);
        luaL_addvalue(&buffer);
    }
    luaL_addchar(&buffer, '\n');
    luaL_pushresult(&buffer);
    size_t length = 0;
    const char *text = lua_tolstring(L, -1, &length);
    S->output(S->host, text, length);
    return 0;
}

/// collectgarbage("count") only: scripts may watch memory but not stop or steer the collector.
static int host_collectgarbage(lua_State *L) {
    const char *option = luaL_optstring(L, 1, "collect");   // Lua's own default: refused too
    if (strcmp(option, "count") != 0)
        return luaL_error(L, "collectgarbage: only \"count\" is allowed in the sandbox (got \"%s\")", option);
    int kilobytes = lua_gc(L, LUA_GCCOUNT, 0), remainder = lua_gc(L, LUA_GCCOUNTB, 0);
    lua_pushnumber(L, (lua_Number)kilobytes + (lua_Number)remainder / 1024.0);
    return 1;
}

/// Why the run stopped, or nil: once stopped, the prelude runs no more script code where hooks may be off.
static int host_stopped(lua_State *L) {
    KiriState *S = state_of(L);
    if (S->stopped) lua_pushstring(L, S->stopMessage);
    else lua_pushnil(L);
    return 1;
}

// MARK: - Parsing in pieces

enum { LOAD_PIECE = 64 * 1024, LOAD_STOPPED = -1 };   // a piece parses in about a millisecond

typedef struct {
    const char *next;
    size_t remaining;
    int stopped;
} PieceReader;

static const char *read_piece(lua_State *L, void *data, size_t *size) {
    PieceReader *reader = data;
    *size = 0;
    if (reader->remaining == 0) return NULL;
    if (must_stop(L)) {
        reader->stopped = 1;
        return NULL;
    }
    const char *piece = reader->next;
    *size = reader->remaining < LOAD_PIECE ? reader->remaining : LOAD_PIECE;
    reader->next += *size;
    reader->remaining -= *size;
    return piece;
}

/// luaL_loadbufferx(..., "t") with the run's stop checked between 64 KiB pieces: the parser is C, out of the
/// hook's reach, and a big chunk takes seconds. Returns a lua_load status (the chunk or its error pushed), or
/// LOAD_STOPPED with nothing pushed.
static int load_text(lua_State *L, const char *source, size_t length, const char *chunkName) {
    PieceReader reader = {source, length, 0};
    int status = lua_load(L, read_piece, &reader, chunkName, "t");
    if (!reader.stopped) return status;
    lua_pop(L, 1);
    return LOAD_STOPPED;
}

/// load(text, chunkName, "t", env) for a string chunk, parsed by load_text.
static int host_load_text(lua_State *L) {
    size_t length = 0;
    const char *source = luaL_checklstring(L, 1, &length);
    const char *chunkName = luaL_optstring(L, 2, source);
    int hasEnvironment = !lua_isnone(L, 3);
    int status = load_text(L, source, length, chunkName);
    if (status == LOAD_STOPPED) return raise_stop(L);
    if (status != LUA_OK) {
        luaL_pushfail(L);
        lua_insert(L, -2);
        return 2;
    }
    if (hasEnvironment) {
        lua_pushvalue(L, 3);
        if (!lua_setupvalue(L, -2, 1)) lua_pop(L, 1);
    }
    return 1;
}

// MARK: - State life cycle

static void open_library(lua_State *L, const char *name, lua_CFunction open) {
    luaL_requiref(L, name, open, 1);
    lua_pop(L, 1);
}

typedef struct { const KiriStateOptions *options; } OpenArguments;

static int open_protected(lua_State *L) {
    open_library(L, LUA_GNAME, luaopen_base);
    open_library(L, LUA_COLIBNAME, luaopen_coroutine);
    open_library(L, LUA_TABLIBNAME, luaopen_table);
    open_library(L, LUA_STRLIBNAME, luaopen_string);
    open_library(L, LUA_MATHLIBNAME, luaopen_math);
    open_library(L, LUA_UTF8LIBNAME, luaopen_utf8);
    open_library(L, LUA_OSLIBNAME, luaopen_os);   // the prelude keeps clock, time and date only

    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &API_KEY);
    // In package.loaded too, so lauxlib names `kiri.add` in errors even when called through pcall.
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    lua_insert(L, -2);
    lua_setfield(L, -2, "kiri");
    lua_pop(L, 1);

    lua_newtable(L);                                   // host functions, seen only by the prelude
    lua_pushcfunction(L, host_print);
    lua_setfield(L, -2, "print");
    lua_pushcfunction(L, host_collectgarbage);
    lua_setfield(L, -2, "collectgarbage");
    lua_pushcfunction(L, host_stopped);
    lua_setfield(L, -2, "stopped");
    lua_pushcfunction(L, host_load_text);
    lua_setfield(L, -2, "loadText");
    lua_rawsetp(L, LUA_REGISTRYINDEX, &HOST_KEY);

    lua_newtable(L);                                   // Tensor methods
    lua_newtable(L);                                   // Tensor metatable
    lua_pushliteral(L, "Tensor");
    lua_setfield(L, -2, "__name");
    lua_pushcfunction(L, tensor_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, tensor_close);
    lua_setfield(L, -2, "__close");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");                // getmetatable(t) gives false: no way in
    lua_rawsetp(L, LUA_REGISTRYINDEX, &META_KEY);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &METHODS_KEY);
    return 0;
}

lua_State *kiri_state_new(const KiriStateOptions *options, char *error, size_t errorSize) {
    KiriState *S = calloc(1, sizeof(KiriState));
    if (!S) {
        snprintf(error, errorSize, "not enough memory");
        return NULL;
    }
    S->memory = options->memoryCounter;
    S->host = options->host;
    S->dispatch = options->dispatch;
    S->releaseHandle = options->releaseHandle;
    S->output = options->output;
    S->interrupt = options->interrupt;
    lua_State *L = lua_newstate(kiri_alloc, S);
    if (!L) {
        free(S);
        snprintf(error, errorSize, "not enough memory");
        return NULL;
    }
    lua_setwarnf(L, kiri_warn, S);
    // Generational: the tensors a sampler loop makes die young, and a young collection does not
    // traverse the whole (mostly API) heap the way an incremental cycle does.
    lua_gc(L, LUA_GCGEN, 0, 0);
    lua_sethook(L, time_hook, LUA_MASKCOUNT, HOOK_INTERVAL);
    lua_pushcfunction(L, open_protected);
    if (lua_pcall(L, 0, 0, 0) != LUA_OK) {
        snprintf(error, errorSize, "%s", lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "error");
        kiri_state_close(L);
        return NULL;
    }
    return L;
}

void kiri_state_close(lua_State *L) {
    KiriState *S = state_of(L);
    lua_close(L);
    if (S->scratchCapacity) S->memory[0] -= (intptr_t)S->scratchCapacity;
    free(S->scratch);
    free(S);
}

void *kiri_host(lua_State *L) { return state_of(L)->host; }
int kiri_stopped(lua_State *L) { return state_of(L)->stopped; }

void kiri_stop(lua_State *L, const char *message) {
    KiriState *S = state_of(L);
    if (S->stopped) return;
    S->stopped = 1;
    snprintf(S->stopMessage, sizeof S->stopMessage, "%s", message);
    lua_sethook(L, time_hook, LUA_MASKCOUNT, 1);
}

/// Copies the error at the top of the stack into `error`. The message handler made it a string.
static void take_error(lua_State *L, char *error, size_t errorSize) {
    const char *message = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "(error object is not a string)";
    snprintf(error, errorSize, "%s", message);
    lua_pop(L, 1);
}

typedef struct { const KiriFunctionSpec *specs; int count; } RegisterArguments;

/// The table `name` names: "kiri", "kiri.sub" (made on first use), "Tensor" (methods), "meta",
/// "host" (functions only the prelude sees).
static void push_target_table(lua_State *L, const char *name) {
    if (strcmp(name, "Tensor") == 0) { lua_rawgetp(L, LUA_REGISTRYINDEX, &METHODS_KEY); return; }
    if (strcmp(name, "host") == 0) { lua_rawgetp(L, LUA_REGISTRYINDEX, &HOST_KEY); return; }
    if (strcmp(name, "meta") == 0) { lua_rawgetp(L, LUA_REGISTRYINDEX, &META_KEY); return; }
    lua_rawgetp(L, LUA_REGISTRYINDEX, &API_KEY);
    if (strncmp(name, "kiri.", 5) != 0) return;
    const char *field = name + 5;
    if (lua_getfield(L, -1, field) != LUA_TTABLE) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_pushvalue(L, -1);
        lua_setfield(L, -3, field);
    }
    lua_remove(L, -2);
}

static int register_protected(lua_State *L) {
    RegisterArguments *arguments = lua_touserdata(L, 1);
    for (int i = 0; i < arguments->count; i++) {
        const KiriFunctionSpec *spec = &arguments->specs[i];
        push_target_table(L, spec->table);
        int isTensorIndex = strcmp(spec->table, "meta") == 0 && strcmp(spec->name, "__index") == 0;
        luaL_argcheck(L, spec->tensorResults >= 0 && spec->tensorResults <= RESERVED_MASK, 1, "too many tensor results");
        lua_pushinteger(L, ((lua_Integer)spec->functionId << FUNCTION_SHIFT) |
                               ((lua_Integer)spec->tensorResults << RESERVED_SHIFT) | (isTensorIndex ? TENSOR_INDEX_FLAG : 0));
        if (isTensorIndex) lua_rawgetp(L, LUA_REGISTRYINDEX, &METHODS_KEY);
        lua_pushcclosure(L, trampoline, isTensorIndex ? 2 : 1);
        lua_setfield(L, -2, spec->name);
        lua_pop(L, 1);
    }
    return 0;
}

/// Runs `body(arguments)` protected: 0, or 1 with the error message in `error`.
static int call_protected(lua_State *L, lua_CFunction body, void *arguments, char *error, size_t errorSize) {
    lua_pushcfunction(L, body);
    lua_pushlightuserdata(L, arguments);
    if (lua_pcall(L, 1, 0, 0) == LUA_OK) return 0;
    take_error(L, error, errorSize);
    return 1;
}

int kiri_register(lua_State *L, const KiriFunctionSpec *specs, int count, char *error, size_t errorSize) {
    RegisterArguments arguments = {specs, count};
    return call_protected(L, register_protected, &arguments, error, errorSize);
}

typedef struct { const KiriChunk *preludes; int count; } SealArguments;

/// Loads preludes[0], the sandbox's own, and calls it with the API tables and a list of the other preludes
/// (loaded, not run: it runs them where their `api` fields belong). All load as "=sandbox", so errors and
/// tracebacks drop their positions as the sandbox's.
static int seal_protected(lua_State *L) {
    SealArguments *arguments = lua_touserdata(L, 1);
    luaL_argcheck(L, arguments->count >= 1, 1, "no sandbox prelude");
    const KiriChunk *preludes = arguments->preludes;
    if (luaL_loadbufferx(L, preludes[0].source, preludes[0].length, "=sandbox", "t") != LUA_OK) return lua_error(L);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &API_KEY);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &METHODS_KEY);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &META_KEY);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &HOST_KEY);
    lua_createtable(L, arguments->count - 1, 0);
    for (int i = 1; i < arguments->count; i++) {
        if (luaL_loadbufferx(L, preludes[i].source, preludes[i].length, "=sandbox", "t") != LUA_OK) return lua_error(L);
        lua_rawseti(L, -2, i);
    }
    lua_call(L, 5, 1);
    luaL_checktype(L, -1, LUA_TTABLE);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &ENV_KEY);
    return 0;
}

int kiri_seal(lua_State *L, const KiriChunk *preludes, int count, char *error, size_t errorSize) {
    SealArguments arguments = {preludes, count};
    return call_protected(L, seal_protected, &arguments, error, errorSize);
}

// MARK: - Running a script

/// Where the script is: "chunk:line: " of the innermost frame outside the sandbox prelude, pushed ("" if none).
static void push_script_position(lua_State *L) {
    lua_Debug ar;
    for (int level = 1; lua_getstack(L, level, &ar); level++) {
        if (!lua_getinfo(L, "Sl", &ar) || ar.currentline <= 0 || strcmp(ar.source, "=sandbox") == 0) continue;
        lua_pushfstring(L, "%s:%d: ", ar.short_src, ar.currentline);
        return;
    }
    lua_pushliteral(L, "");
}

/// The traceback without the sandbox prelude's frames: its chunk and lines are Kiri's internals, not the script's.
static void push_script_traceback(lua_State *L, const char *message) {
    luaL_traceback(L, L, message, 1);
    const char *text = lua_tostring(L, -1);
    luaL_Buffer buffer;
    luaL_buffinit(L, &buffer);
    for (const char *line = text; *line;) {
        const char *end = strchr(line, '\n');
        size_t length = end ? (size_t)(end - line + 1) : strlen(line);
        if (strncmp(line, "\tsandbox:", 9) != 0) luaL_addlstring(&buffer, line, length);
        line += length;
    }
    luaL_pushresult(&buffer);
    lua_remove(L, -2);
}

/// Length of a "sandbox:N: " position at `text`, or 0.
static size_t prelude_position(const char *text) {
    if (strncmp(text, "sandbox:", 8) != 0) return 0;
    const char *rest = text + 8;
    while (*rest >= '0' && *rest <= '9') rest++;
    return rest > text + 8 && rest[0] == ':' && rest[1] == ' ' ? (size_t)(rest + 2 - text) : 0;
}

/// `message` without the prelude's positions (an error raised inside one of its wrappers, such as a C stack
/// overflow, carries one, and errors passed up through coroutine.wrap keep it): a leading one becomes the script's
/// position, the others go.
static const char *push_script_message(lua_State *L, const char *message) {
    luaL_Buffer buffer;
    luaL_buffinit(L, &buffer);
    for (const char *text = message; *text;) {
        size_t skip = prelude_position(text);
        if (skip == 0) {
            luaL_addchar(&buffer, *text++);
            continue;
        }
        if (text == message) {
            push_script_position(L);
            luaL_addvalue(&buffer);
        }
        text += skip;
    }
    luaL_pushresult(&buffer);
    return lua_tostring(L, -1);
}

/// Message handler: the error as a string plus a traceback. Never called for memory errors. An error about the
/// user's input (a table with a string `input_error`, which lib/recipe.lua's input_error raises) is that string
/// alone: it names the argument or option the user gave, and a traceback into the recipe would only distract.
static int traceback_handler(lua_State *L) {
    if (lua_type(L, 1) == LUA_TTABLE) {
        lua_pushliteral(L, "input_error");
        if (lua_rawget(L, 1) == LUA_TSTRING) return 1;
        lua_pop(L, 1);
    }
    const char *message = lua_tostring(L, 1);
    if (message == NULL) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING) message = lua_tostring(L, -1);
        else message = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    }
    push_script_traceback(L, push_script_message(L, message));
    return 1;
}

typedef struct {
    const char *source;
    size_t length;
    const char *chunkName;
    const char *const *arguments;
    int argumentCount;
} RunArguments;

static int run_protected(lua_State *L) {
    RunArguments *run = lua_touserdata(L, 1);
    lua_settop(L, 0);
    int status = load_text(L, run->source, run->length, run->chunkName);
    if (status == LOAD_STOPPED) return raise_stop(L);
    if (status != LUA_OK) return lua_error(L);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &ENV_KEY);
    lua_createtable(L, run->argumentCount, 1);         // arg: the arguments, arg[0] = the script
    for (int i = 0; i < run->argumentCount; i++) {
        lua_pushstring(L, run->arguments[i]);
        lua_rawseti(L, -2, i);
    }
    lua_setfield(L, -2, "arg");
    lua_setupvalue(L, 1, 1);                           // the chunk's _ENV
    for (int i = 1; i < run->argumentCount; i++) lua_pushstring(L, run->arguments[i]);
    lua_call(L, run->argumentCount > 0 ? run->argumentCount - 1 : 0, 0);
    return 0;
}

int kiri_run(lua_State *L, const char *source, size_t length, const char *chunkName,
             const char *const *arguments, int argumentCount, char *error, size_t errorSize) {
    RunArguments run = {source, length, chunkName, arguments, argumentCount};
    lua_settop(L, 0);
    lua_pushcfunction(L, traceback_handler);
    lua_pushcfunction(L, run_protected);
    lua_pushlightuserdata(L, &run);
    int status = lua_pcall(L, 1, 0, 1);
    if (status == LUA_OK) {
        lua_settop(L, 0);
        return 0;
    }
    take_error(L, error, errorSize);
    lua_settop(L, 0);
    return status;
}
