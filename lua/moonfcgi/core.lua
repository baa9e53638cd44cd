-- The C core as LuaJIT's FFI sees it: the declarations of src/ffi.h and the library that
-- holds them. Inside the moonfcgi binary the symbols are in the process itself (ffi.C);
-- under busted they come from libmoonfcgi.so ($MOONFCGI_LIB, set by moonfcgi-busted).
local ffi = require "ffi"

local _M = {}

-- Kept verbatim in step with the CDEF part of src/ffi.h (spec/lua/cdef_spec.lua checks it).
_M.cdef = [[
typedef struct mf_worker mf_worker_t;
typedef struct mf_request mf_request_t;

enum {
    MF_OK = 0,
    MF_EOF = 1,
    MF_WAIT = 2,
    MF_ABORTED = -1,
    MF_TIMEOUT = -2,
    MF_TOO_LARGE = -3,
    MF_BAD_STATE = -4,
    MF_BAD_VALUE = -5,
    MF_NO_MEMORY = -6
};

enum {
    MF_EV_NEW = 1,
    MF_EV_WAKE = 2,
    MF_EV_TIMEOUT = 3,
    MF_EV_TIMER = 4,
    MF_EV_RELOAD = 5,
    MF_EV_KILL = 6,
    MF_EV_WAKE_TOKEN = 7
};

enum { MF_FINISH_OK = 0, MF_FINISH_ERROR = 1, MF_FINISH_TIMEOUT = 2 };

typedef struct mf_event {
    int32_t type;
    uint32_t slot;
    uint32_t serial;
    uint16_t id;
    uint8_t role;
    uint8_t keep_conn;
    mf_request_t *req;
    uint64_t token;
} mf_event_t;

typedef struct mf_ffi_options {
    unsigned max_conns;
    unsigned max_reqs;
    size_t max_params;
    size_t max_body;
    double timeout;
    double idle_timeout;
    double read_timeout;
    int log_level;
} mf_ffi_options_t;

const char *mf_ffi_version(void);

mf_worker_t *mf_ffi_worker_current(void);
mf_worker_t *mf_ffi_worker_new(const mf_ffi_options_t *opts);
void mf_ffi_worker_close(mf_worker_t *w);
void mf_ffi_worker_free(mf_worker_t *w);
int mf_ffi_worker_pair(mf_worker_t *w, int *client_fd);
int mf_ffi_worker_poll(mf_worker_t *w, int timeout_ms, mf_event_t **events);
void mf_ffi_worker_flush(mf_worker_t *w);
uint32_t mf_ffi_worker_released(mf_worker_t *w, uint64_t **tokens);
void mf_ffi_worker_stop(mf_worker_t *w);
void mf_ffi_worker_set_roles(mf_worker_t *w, unsigned roles);
int mf_ffi_worker_number(mf_worker_t *w);
double mf_ffi_worker_now(mf_worker_t *w);
unsigned mf_ffi_worker_requests(mf_worker_t *w);
unsigned mf_ffi_worker_connections(mf_worker_t *w);
int mf_ffi_worker_next_version(mf_worker_t *w);
void mf_ffi_worker_app_loaded(mf_worker_t *w, int version, int ok);
int mf_ffi_worker_count(mf_worker_t *w);
int mf_ffi_worker_exiting(mf_worker_t *w);
void mf_ffi_worker_update_time(mf_worker_t *w);

int mf_ffi_resolver_configure(mf_worker_t *w, const char *servers, double timeout, double valid,
                              int ipv6);

void *mf_ffi_timer_start(mf_worker_t *w, double seconds, uint64_t token);
void mf_ffi_timer_cancel(mf_worker_t *w, void *timer, uint64_t token);

const char *mf_ffi_snapshot_file(const char *path, size_t *len);
int mf_ffi_snapshot_refresh(void);

void mf_ffi_log(int level, const char *msg, size_t len);
int mf_ffi_log_level(void);

int mf_ffi_req_param_count(mf_request_t *r);
int mf_ffi_req_param_at(mf_request_t *r, int i, const char **name, size_t *name_len,
                        const char **value, size_t *value_len);
int mf_ffi_req_param(mf_request_t *r, const char *name, size_t name_len, const char **value,
                     size_t *value_len);

int mf_ffi_req_read(mf_request_t *r, int stream, size_t max, const char **p, size_t *len);
int mf_ffi_req_body(mf_request_t *r, int stream, const char **p, size_t *len);
void mf_ffi_req_consume(mf_request_t *r, int stream, size_t len);

int mf_ffi_req_set_status(mf_request_t *r, int status, const char *reason, size_t reason_len);
int mf_ffi_req_set_header(mf_request_t *r, const char *name, size_t name_len, const char *value,
                          size_t value_len, int append);
int mf_ffi_req_write(mf_request_t *r, const char *p, size_t len);
int mf_ffi_req_write_ref(mf_request_t *r, const char *p, size_t len, uint64_t token, int *nrefs);
int mf_ffi_req_raw_write(mf_request_t *r, const char *p, size_t len);
int mf_ffi_req_writable(mf_request_t *r);
int mf_ffi_req_flush(mf_request_t *r);
int mf_ffi_req_stderr(mf_request_t *r, const char *p, size_t len);
int mf_ffi_req_aborted(mf_request_t *r);
int mf_ffi_req_headers_sent(mf_request_t *r);
int mf_ffi_req_status(mf_request_t *r);
void mf_ffi_req_finish(mf_request_t *r, uint32_t app_status, int how);
]]

ffi.cdef(_M.cdef)

local function in_process()
    return ffi.C.mf_ffi_version
end

if pcall(in_process) then
    _M.C = ffi.C
else
    local path = os.getenv("MOONFCGI_LIB")
    -- Global, as the symbols of the binary are: pure-Lua OpenResty libraries call
    -- ngx_hex_dump and libcrypto (a dependency of the core library) through ffi.C.
    local ok, lib = pcall(ffi.load, path or "moonfcgi", true)
    if not ok then
        error("moonfcgi: cannot load the core library (" .. (path or "libmoonfcgi.so")
            .. "): " .. tostring(lib) .. "; run specs with moonfcgi-busted", 2)
    end
    _M.C = lib
end

return _M
