/* A launch's commands started in one call, with the interpreter lock released throughout.
 *
 * Why in C (see exec/spawn.py's docstring for the figures): started from Python, each command
 * cost its spawn thread a dozen hand-offs of the interpreter lock with the loop (one at every
 * system call), a pidfd_open, and a move into its slot's cgroup made after the fork, which waits
 * on the kernel's lock for the child's exec. Here a batch is converted to C arrays first, then
 * every command is forked with the lock released, and each child moves itself into its slot's
 * cgroup before it execs (nothing it runs can start outside), its pidfd given by the fork itself.
 *
 * The child is made as posix_spawn makes it (CLONE_VM | CLONE_VFORK on a stack of its own): it
 * shares our memory until its exec, so it only makes system calls, and reports a failure by
 * writing into the job's record, which we read once it has exec'd or ended. (clone3's
 * CLONE_INTO_CGROUP would have it born in its cgroup, unmoved, but Linux 6.18 kills every child
 * forked that way into a cgroup that was once killed through cgroup.kill, which is what a
 * session's close does to its slots: it compares the kill count of the parent's cgroup with the
 * destination's. So the child moves itself. Into a frozen cgroup it stops there, and we wait
 * with it: a command may freeze its own slot, and so hang its own node's next launch there;
 * docs/reference.md says so.) Every signal is
 * blocked around the fork, and the child sets back to their defaults the signals that have a
 * handler here (a handler of ours must never run in it) and those Python ignores (SIGPIPE,
 * SIGXFSZ), as Popen's restore_signals does, before it unblocks them.
 */

#define _GNU_SOURCE
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/vfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef CLONE_PIDFD
#define CLONE_PIDFD 0x00001000
#endif
#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

#ifndef CGROUP2_SUPER_MAGIC
#define CGROUP2_SUPER_MAGIC 0x63677270
#endif

#define STACK_SIZE (256 * 1024)

enum stage { OK = 0, AT_PIPE, AT_CGROUP_OPEN, AT_FORK, AT_SETSID, AT_DUP, AT_CGROUP, AT_CHDIR,
             AT_EXEC, AT_MEMORY, REFUSED };
static const char *const stage_names[] = {
    "", "pipe", "cgroup", "fork", "setsid", "dup", "cgroup", "chdir", "exec", "memory", "null"};

struct job {
    char **argv;          /* NULL-terminated, pointing into the job's bytes */
    char **exes;          /* the paths to try, in order */
    Py_ssize_t nexes;
    char **envp;          /* NULL-terminated */
    const char *cwd;      /* or NULL */
    const char *procs;    /* its slot's cgroup.procs, or NULL */
    int child_fds[3];     /* the child's stdin, stdout, stderr */
    int our_fds[3];       /* our ends: stdin's write end, stdout's and stderr's read ends */
    int procs_fd;
    int pidfd;
    pid_t pid;
    volatile int err;     /* written by the child before it exits, when it cannot exec */
    volatile int stage;
};

struct child_args {
    struct job *job;
    const sigset_t *mask;  /* the thread's mask before we blocked everything */
};

static void fail(struct job *j, int stage)
{
    j->err = errno;
    j->stage = stage;
    _exit(127);
}

static int child(void *arg)
{
    struct child_args *a = arg;
    struct job *j = a->job;
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    /* Asked here, not once per batch: the main thread may install a handler meanwhile. */
    for (int sig = 1; sig < NSIG; sig++) {
        struct sigaction sa;
        if (sig == SIGKILL || sig == SIGSTOP || sigaction(sig, NULL, &sa) < 0)
            continue;
        if (sa.sa_handler != SIG_DFL &&
            (sa.sa_handler != SIG_IGN || sig == SIGPIPE || sig == SIGXFSZ))
            sigaction(sig, &dfl, NULL);
    }
    if (setsid() < 0)
        fail(j, AT_SETSID);
    for (int k = 0; k < 3; k++) {
        if (dup2(j->child_fds[k], k) < 0)  /* (all above 2: start() saw to it) */
            fail(j, AT_DUP);
    }
    if (j->procs_fd >= 0 && write(j->procs_fd, "0", 1) != 1)
        fail(j, AT_CGROUP);
    if (j->cwd != NULL && chdir(j->cwd) < 0)
        fail(j, AT_CHDIR);
    /* Nothing of ours but the three reaches the program, even a descriptor made inheritable. */
    if (syscall(SYS_close_range, 3U, ~0U, CLOSE_RANGE_CLOEXEC) < 0)
        syscall(SYS_close_range, 3U, ~0U, 0U);
    sigprocmask(SIG_SETMASK, a->mask, NULL);
    int saved = 0;
    for (Py_ssize_t i = 0; i < j->nexes; i++) {
        execve(j->exes[i], j->argv, j->envp);
        if (saved == 0 && errno != ENOENT && errno != ENOTDIR)
            saved = errno;
    }
    if (saved != 0)
        errno = saved;
    fail(j, AT_EXEC);
    return 127;
}

static void close_fd(int *fd)
{
    if (*fd >= 0) {
        close(*fd);
        *fd = -1;
    }
}

/* Fork and exec one job (the interpreter lock released); its stage says how it went. */
static void start(struct job *j, void *stack)
{
    int p[3][2] = {{-1, -1}, {-1, -1}, {-1, -1}};
    for (int k = 0; k < 3; k++) {
        if (pipe2(p[k], O_CLOEXEC) < 0) {
            j->err = errno;
            j->stage = AT_PIPE;
            goto out;
        }
        /* Never 0, 1 or 2 (a daemon started with one closed): the child's dup2 to its standard
         * descriptors would overwrite one pipe with another. */
        for (int e = 0; e < 2; e++) {
            if (p[k][e] < 3) {
                int moved = fcntl(p[k][e], F_DUPFD_CLOEXEC, 3);
                if (moved < 0) {
                    j->err = errno;
                    j->stage = AT_PIPE;
                    goto out;
                }
                close(p[k][e]);
                p[k][e] = moved;
            }
        }
    }
    j->child_fds[0] = p[0][0];
    j->child_fds[1] = p[1][1];
    j->child_fds[2] = p[2][1];
    if (j->procs != NULL) {
        /* (O_NONBLOCK: a FIFO planted there fails at once instead of waiting for a reader) */
        j->procs_fd = open(j->procs, O_WRONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
        struct statfs fs;
        int why = 0;
        if (j->procs_fd < 0 || fstatfs(j->procs_fd, &fs) < 0)
            why = errno;
        else if (fs.f_type != CGROUP2_SUPER_MAGIC)
            why = EINVAL;  /* not a cgroup's file: nothing may be started "in" it */
        if (why != 0) {
            j->err = why;
            j->stage = AT_CGROUP_OPEN;
            goto out;
        }
    }
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    struct child_args a = {j, &old};
    j->pid = clone(child, (char *)stack + STACK_SIZE,
                   CLONE_VM | CLONE_VFORK | CLONE_PIDFD | SIGCHLD, &a, &j->pidfd);
    int clone_errno = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (j->pid < 0) {
        j->err = clone_errno;
        j->stage = AT_FORK;
        j->pidfd = -1;
        goto out;
    }
    if (j->stage != OK) {  /* it could not exec, and has ended: reap it */
        while (waitpid(j->pid, NULL, 0) < 0 && errno == EINTR)
            ;
        close_fd(&j->pidfd);
    }
out:
    close_fd(&j->procs_fd);
    close_fd(&p[0][0]);
    close_fd(&p[1][1]);
    close_fd(&p[2][1]);
    if (j->stage == OK) {
        j->our_fds[0] = p[0][1];
        j->our_fds[1] = p[1][0];
        j->our_fds[2] = p[2][0];
        /* Our read ends are read from an event loop: never blocking. */
        for (int k = 1; k < 3; k++)
            fcntl(j->our_fds[k], F_SETFL, fcntl(j->our_fds[k], F_GETFL) | O_NONBLOCK);
    } else {
        close_fd(&p[0][1]);
        close_fd(&p[1][0]);
        close_fd(&p[2][0]);
    }
}

/* A NULL-terminated array of the items of a tuple of bytes (borrowed pointers), or NULL with an
 * exception set; an embedded NUL sets *nul (the job is refused, as Popen refuses it). */
static char **strings(PyObject *t, const char *what, int *nul)
{
    if (!PyTuple_Check(t)) {
        PyErr_Format(PyExc_TypeError, "%s: a tuple of bytes expected", what);
        return NULL;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(t);
    char **out = PyMem_Calloc((size_t)n + 1, sizeof(char *));
    if (out == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *b = PyTuple_GET_ITEM(t, i);
        if (!PyBytes_Check(b)) {
            PyErr_Format(PyExc_TypeError, "%s: a tuple of bytes expected", what);
            PyMem_Free(out);
            return NULL;
        }
        if ((Py_ssize_t)strlen(PyBytes_AS_STRING(b)) != PyBytes_GET_SIZE(b))
            *nul = 1;
        out[i] = PyBytes_AS_STRING(b);
    }
    return out;
}

static const char *optional_path(PyObject *o, int *nul)
{
    if (o == Py_None)
        return NULL;
    if (!PyBytes_Check(o)) {
        PyErr_SetString(PyExc_TypeError, "a path: bytes or None expected");
        return NULL;
    }
    if ((Py_ssize_t)strlen(PyBytes_AS_STRING(o)) != PyBytes_GET_SIZE(o))
        *nul = 1;
    return PyBytes_AS_STRING(o);
}

static void free_jobs(struct job *jobs, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        PyMem_Free(jobs[i].argv);
        PyMem_Free(jobs[i].exes);
        PyMem_Free(jobs[i].envp);
    }
    PyMem_Free(jobs);
}

PyDoc_STRVAR(spawn_batch_doc,
"spawn_batch(jobs) -> list\n\n"
"Start each job, a tuple (argv, exes, envp, cwd, procs): argv and envp tuples of bytes, exes\n"
"the paths to exec in turn (a tuple of bytes), cwd and procs (its cgroup's cgroup.procs)\n"
"bytes or None. Each child leads a session of its own, has the three pipes as its standard\n"
"descriptors and no other, and is in its cgroup before it execs. Gives, per job in order,\n"
"(pid, pidfd, stdin_w, stdout_r, stderr_r), the read ends non-blocking, or (stage, errno)\n"
"when it could not start, stage one of pipe, cgroup, fork, setsid, dup, chdir, exec, memory,\n"
"or null (an embedded NUL: refused, not tried).");

static PyObject *spawn_batch(PyObject *self, PyObject *arg)
{
    (void)self;
    PyObject *seq = PySequence_Tuple(arg);  /* (held: every pointer below points into it) */
    if (seq == NULL)
        return NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(seq);
    struct job *jobs = PyMem_Calloc((size_t)n + 1, sizeof(struct job));
    PyObject *result = NULL;
    if (jobs == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        struct job *j = &jobs[i];
        j->procs_fd = j->pidfd = -1;
        for (int k = 0; k < 3; k++)
            j->child_fds[k] = j->our_fds[k] = -1;
        PyObject *t = PyTuple_GET_ITEM(seq, i);
        if (!PyTuple_Check(t) || PyTuple_GET_SIZE(t) != 5) {
            PyErr_SetString(PyExc_TypeError, "a job: (argv, exes, envp, cwd, procs) expected");
            goto fail;
        }
        PyObject *cwd = PyTuple_GET_ITEM(t, 3), *procs = PyTuple_GET_ITEM(t, 4);
        int nul = 0;
        if ((j->argv = strings(PyTuple_GET_ITEM(t, 0), "argv", &nul)) == NULL ||
            (j->exes = strings(PyTuple_GET_ITEM(t, 1), "exes", &nul)) == NULL ||
            (j->envp = strings(PyTuple_GET_ITEM(t, 2), "envp", &nul)) == NULL)
            goto fail;
        if (j->argv[0] == NULL) {
            PyErr_SetString(PyExc_ValueError, "argv must not be empty");
            goto fail;
        }
        j->nexes = PyTuple_GET_SIZE(PyTuple_GET_ITEM(t, 1));
        j->cwd = optional_path(cwd, &nul);
        if (j->cwd == NULL && PyErr_Occurred())
            goto fail;
        j->procs = optional_path(procs, &nul);
        if (j->procs == NULL && PyErr_Occurred())
            goto fail;
        if (nul)
            j->stage = REFUSED;
    }

    Py_BEGIN_ALLOW_THREADS
    void *stack = mmap(NULL, STACK_SIZE, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    for (Py_ssize_t i = 0; i < n; i++) {
        if (jobs[i].stage == REFUSED)
            continue;
        if (stack == MAP_FAILED) {
            jobs[i].err = ENOMEM;
            jobs[i].stage = AT_MEMORY;
        } else {
            start(&jobs[i], stack);
        }
    }
    if (stack != MAP_FAILED)
        munmap(stack, STACK_SIZE);
    Py_END_ALLOW_THREADS

    result = PyList_New(n);
    if (result == NULL)
        goto cleanup;
    for (Py_ssize_t i = 0; i < n; i++) {
        struct job *j = &jobs[i];
        PyObject *item;
        if (j->stage == OK)
            item = Py_BuildValue("(iiiii)", (int)j->pid, j->pidfd, j->our_fds[0], j->our_fds[1],
                                 j->our_fds[2]);
        else
            item = Py_BuildValue("(si)", stage_names[j->stage], j->err);
        if (item == NULL) {
            Py_CLEAR(result);
            goto cleanup;
        }
        PyList_SET_ITEM(result, i, item);
    }
    for (Py_ssize_t i = 0; i < n; i++)  /* (the list owns them now, every one) */
        if (jobs[i].stage == OK)
            jobs[i].pidfd = jobs[i].our_fds[0] = jobs[i].our_fds[1] = jobs[i].our_fds[2] = -1;
cleanup:  /* what a failure to build the result left: children nobody will know of, descriptors */
    for (Py_ssize_t i = 0; i < n; i++) {
        if (jobs[i].pidfd >= 0) {
            kill(jobs[i].pid, SIGKILL);
            while (waitpid(jobs[i].pid, NULL, 0) < 0 && errno == EINTR)
                ;
        }
        close_fd(&jobs[i].pidfd);
        for (int k = 0; k < 3; k++)
            close_fd(&jobs[i].our_fds[k]);
    }
fail:
    free_jobs(jobs, n);
done:
    Py_DECREF(seq);
    return result;
}

static PyMethodDef methods[] = {
    {"spawn_batch", spawn_batch, METH_O, spawn_batch_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_spawn",
    "A launch's commands started in one call (see the source's first comment).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__spawn(void)
{
    return PyModule_Create(&module);
}
