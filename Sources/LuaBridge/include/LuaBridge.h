// The only door between Swift and Lua.
//
// Lua reports errors by longjmp (lua_error, luaL_check*, and any allocation that fails). A longjmp
// must never cross a Swift frame, so Swift never sees lua.h: it gets an opaque lua_State and the
// calls below, none of which can raise. Swift functions exposed to Lua are called from a C
// trampoline; they read their arguments with kiri_arg_*, describe their results or error in a
// KiriCall, and return. The trampoline then pushes the results or raises the error, in C.
#ifndef KIRI_LUA_BRIDGE_H
#define KIRI_LUA_BRIDGE_H

#include <stddef.h>
#include <stdint.h>

typedef struct lua_State lua_State;

// MARK: - Values (the LUA_T* numbering)
enum {
    KIRI_TNONE = -1, KIRI_TNIL = 0, KIRI_TBOOLEAN = 1, KIRI_TLIGHTUSERDATA = 2, KIRI_TNUMBER = 3,
    KIRI_TSTRING = 4, KIRI_TTABLE = 5, KIRI_TFUNCTION = 6, KIRI_TUSERDATA = 7, KIRI_TTHREAD = 8,
};

// MARK: - A call from Lua into Swift
enum { KIRI_MAX_RESULTS = 4, KIRI_MESSAGE_SIZE = 1024 };
typedef enum { KIRI_OK = 0, KIRI_ARGUMENT_ERROR = 1, KIRI_ERROR = 2 } KiriStatus;
typedef enum {
    KIRI_RESULT_NIL, KIRI_RESULT_NUMBER, KIRI_RESULT_INTEGER, KIRI_RESULT_BOOLEAN,
    KIRI_RESULT_STACK,    // the value already at `stackIndex` (e.g. self, for in-place methods)
    KIRI_RESULT_TENSOR,   // a retained tensor handle, moved into a userdata reserved before the call
    KIRI_RESULT_STRING,   // bytes copied into the state's scratch buffer
    KIRI_RESULT_NUMBERS,  // a flat list of numbers (from the scratch buffer) as a Lua sequence
    KIRI_RESULT_NESTED,   // float data shaped by `shape` as nested Lua tables (Tensor:totable)
    KIRI_RESULT_STRING_TABLE,  // string pairs (from the scratch buffer) as a Lua table {key = value}
} KiriResultKind;

typedef struct {
    KiriResultKind kind;
    double number;
    int64_t integer;
    int stackIndex;
    void *handle;
    size_t offset, length;         // into the scratch buffer
    const float *floats;           // for KIRI_RESULT_NESTED; owned by an argument, alive during the call
    int shape[8];
    int rank;
} KiriResult;

typedef struct KiriCall {
    int argumentCount;              // arguments given by Lua (reserved result slots follow them)
    int functionId;                 // which Swift function the trampoline stands for
    KiriStatus status;
    int argument;                   // with KIRI_ARGUMENT_ERROR: the 1-based argument at fault
    char message[KIRI_MESSAGE_SIZE];
    int resultCount;
    KiriResult results[KIRI_MAX_RESULTS];
    int reservedTensors;            // userdata slots pushed before the call, used in order
    int usedTensors;
    size_t newTensorBytes;          // bytes of new tensors, told to the GC so it sees them
    size_t heldStringBytes;         // bytes of Lua strings Swift copied, charged to the memory cap during the call
} KiriCall;

/// One function for every Swift binding: `call->functionId` says which.
typedef void (*KiriDispatch)(lua_State *L, KiriCall *call);
/// Drops the reference a tensor userdata holds (its __gc), or frees its storage early (its __close).
typedef void (*KiriHandleRelease)(void *handle, int closeNow);
/// Receives text the script prints.
typedef void (*KiriOutput)(void *host, const char *bytes, size_t length);
/// Whether the run must stop now (its time limit passed, or it was cancelled); if so it writes why into `message`.
/// Asked by the instruction hook and between the pieces of a long parse. Must not raise.
typedef int (*KiriInterrupt)(void *host, char *message, size_t messageSize);

// MARK: - State

typedef struct {
    intptr_t *memoryCounter;        // [used, peak, limit], shared with Swift's MemoryBudget
    void *host;                     // handed back to Swift by kiri_host
    KiriDispatch dispatch;
    KiriHandleRelease releaseHandle;
    KiriOutput output;
    KiriInterrupt interrupt;
} KiriStateOptions;

/// A new state with the allowed libraries open and empty API tables, ready for kiri_register and
/// then kiri_seal. NULL if it cannot be made; then `error` holds the reason.
lua_State *kiri_state_new(const KiriStateOptions *options, char *error, size_t errorSize);
/// Lua source text, not NUL-terminated.
typedef struct { const char *source; size_t length; } KiriChunk;
/// Runs the sandbox set-up chunk preludes[0] with (kiri, Tensor methods, Tensor metatable, host functions, the
/// other preludes loaded as functions). It returns the environment every script then runs in. Call once, after
/// registering.
int kiri_seal(lua_State *L, const KiriChunk *preludes, int count, char *error, size_t errorSize);
void kiri_state_close(lua_State *L);
void *kiri_host(lua_State *L);
/// Whether the run was stopped (time limit or cancellation; it stays stopped for the state's life).
int kiri_stopped(lua_State *L);
/// Stops the run for good with `message`, as the hook does when `interrupt` answers yes: from now on every
/// instruction and every host call raises it. For a host call that noticed the stop itself. Never raises.
void kiri_stop(lua_State *L, const char *message);

/// Registers Swift function `functionId` as `table.name` in the API table `table`: "kiri",
/// "kiri.NAME" (a sub-table), "Tensor" (methods), "meta" (the Tensor metatable) or "host" (given
/// only to the prelude). `tensorResults` is how many new tensors it may return. Protected; returns
/// 0 or writes the error.
typedef struct { const char *table; const char *name; int functionId; int tensorResults; } KiriFunctionSpec;
int kiri_register(lua_State *L, const KiriFunctionSpec *specs, int count, char *error, size_t errorSize);

/// Runs `source` as chunk `chunkName` ("@path" for files) in the sandbox, with `arg` = arguments
/// (arg[0] = script). Returns 0, or non-zero with the message and traceback in `error` (truncated).
int kiri_run(lua_State *L, const char *source, size_t length, const char *chunkName,
             const char *const *arguments, int argumentCount, char *error, size_t errorSize);

// MARK: - Reading arguments (never raise)
int kiri_arg_type(lua_State *L, int index);
const char *kiri_arg_typename(lua_State *L, int index);   // "Tensor" for tensors
/// 1 if the value is a number (not a numeric string), with the value in *out.
int kiri_arg_number(lua_State *L, int index, double *out);
/// 1 if the value is a number with an exact integer representation.
int kiri_arg_integer(lua_State *L, int index, int64_t *out);
int kiri_arg_boolean(lua_State *L, int index);
/// The handle of a tensor userdata, or NULL if the value is not a live tensor.
void *kiri_arg_tensor(lua_State *L, int index);
/// 1 if `index` holds a tensor userdata whose tensor was closed.
int kiri_arg_is_closed_tensor(lua_State *L, int index);
/// The bytes of a string value (no conversion from numbers), or NULL.
const char *kiri_arg_string(lua_State *L, int index, size_t *length);
/// Raw length of a table (#t without __len).
size_t kiri_table_length(lua_State *L, int index);
/// Pushes t[i] (raw), returning its type. Pop it with kiri_pop. Returns KIRI_TNONE if the stack
/// cannot grow.
int kiri_table_push(lua_State *L, int index, int64_t i);
/// Raw traversal of the table at `index` (a positive stack index), as lua_next: push a nil key with
/// kiri_push_nil to start; each call replaces the key on top with the next key and its value and returns
/// 1, or pops the key and returns 0 at the end. Pop the value before the next call, and leave the table as it is.
int kiri_table_next(lua_State *L, int index);
/// Pushes nil; 0 if the stack cannot grow.
int kiri_push_nil(lua_State *L);
void kiri_pop(lua_State *L, int count);

// MARK: - Describing results (never raise)
void kiri_result_nil(KiriCall *call);
void kiri_result_number(KiriCall *call, double value);
void kiri_result_integer(KiriCall *call, int64_t value);
void kiri_result_boolean(KiriCall *call, int value);
void kiri_result_stack(KiriCall *call, int index);
/// Takes a retained handle. Returns 0 (and keeps nothing) if no reserved slot is left.
int kiri_result_tensor(lua_State *L, KiriCall *call, void *handle, size_t bytes);
/// Copies the bytes; returns 0 if the scratch buffer cannot grow.
int kiri_result_string(lua_State *L, KiriCall *call, const char *bytes, size_t length);
int kiri_result_numbers(lua_State *L, KiriCall *call, const double *values, size_t count);
void kiri_result_nested(KiriCall *call, const float *data, const int *shape, int rank);
/// `length` bytes of pairs, each a key then a value, each a size_t byte count followed by its bytes, as one
/// table {key = value}. Copies the bytes; returns 0 if the scratch buffer cannot grow.
int kiri_result_string_table(lua_State *L, KiriCall *call, const char *bytes, size_t length);
void kiri_fail(KiriCall *call, int argument, const char *message);

#endif
