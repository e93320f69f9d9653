/* startup_time: how long a server takes from exec to its first "listening" line.
 *
 * Usage: startup_time [--runs 10] [--cpu N] [--timeout 5] -- command [args...]
 *
 * Each run forks, pins the child to CPU N if --cpu is given, points its stdout at a pipe and
 * execs the command (its stderr goes to /dev/null). The clock (CLOCK_MONOTONIC) starts just
 * before the fork and stops when a line containing "listening" has been read from the pipe;
 * the child then gets SIGTERM (SIGKILL after 2 s) and is reaped before the next run. The
 * result is one line on stdout:
 *   startup_ms: median 12.34  min 11.90  max 15.02  runs 10
 * It fails (exit status 1) if the command exits, or prints no such line within --timeout s.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* SIGTERM, then SIGKILL if it has not exited within 2 s; always reaps. */
static void stop_child(pid_t pid) {
  int i;
  kill(pid, SIGTERM);
  for (i = 0; i < 200; i++) {
    if (waitpid(pid, NULL, WNOHANG) == pid)
      return;
    usleep(10000);
  }
  kill(pid, SIGKILL);
  waitpid(pid, NULL, 0);
}

/* One run: the milliseconds to the "listening" line, or a negative value on failure. */
static double one_run(char **cmd, int cpu, double timeout_ms) {
  int fds[2];
  char buf[4096];
  size_t len = 0;
  double t0, t1;
  pid_t pid;

  if (pipe2(fds, O_CLOEXEC) != 0) {
    perror("startup_time: pipe");
    return -1;
  }
  t0 = now_ms();
  pid = fork();
  if (pid < 0) {
    perror("startup_time: fork");
    return -1;
  }
  if (pid == 0) {
    int devnull = open("/dev/null", O_WRONLY);
    if (cpu >= 0) {
      cpu_set_t set;
      CPU_ZERO(&set);
      CPU_SET(cpu, &set);
      sched_setaffinity(0, sizeof set, &set);
    }
    dup2(fds[1], STDOUT_FILENO);
    if (devnull >= 0)
      dup2(devnull, STDERR_FILENO);
    execvp(cmd[0], cmd);
    _exit(127);
  }
  close(fds[1]);
  for (;;) {
    struct pollfd p = {fds[0], POLLIN, 0};
    double left = timeout_ms - (now_ms() - t0);
    ssize_t n;
    if (left <= 0 || poll(&p, 1, (int)left + 1) == 0) {
      fprintf(stderr, "startup_time: no 'listening' line within %.0f ms\n", timeout_ms);
      break;
    }
    n = read(fds[0], buf + len, sizeof buf - 1 - len);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0) {
      fprintf(stderr, "startup_time: %s exited before printing a 'listening' line\n", cmd[0]);
      break;
    }
    len += (size_t)n;
    buf[len] = '\0';
    if (strstr(buf, "listening") != NULL) {
      t1 = now_ms();
      close(fds[0]);
      stop_child(pid);
      return t1 - t0;
    }
    if (len == sizeof buf - 1)
      len = 0; /* a lot of other output: keep looking in fresh space */
  }
  close(fds[0]);
  stop_child(pid);
  return -1;
}

int main(int argc, char **argv) {
  int runs = 10, cpu = -1, i, argi = 1;
  double timeout_ms = 5000, *ms;

  for (; argi < argc && strcmp(argv[argi], "--") != 0; argi++) {
    if (strcmp(argv[argi], "--runs") == 0 && argi + 1 < argc)
      runs = atoi(argv[++argi]);
    else if (strcmp(argv[argi], "--cpu") == 0 && argi + 1 < argc)
      cpu = atoi(argv[++argi]);
    else if (strcmp(argv[argi], "--timeout") == 0 && argi + 1 < argc)
      timeout_ms = atof(argv[++argi]) * 1000.0;
    else
      break;
  }
  if (argi >= argc - 1 || strcmp(argv[argi], "--") != 0 || runs < 1) {
    fputs("usage: startup_time [--runs 10] [--cpu N] [--timeout 5] -- command [args...]\n",
          stderr);
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  ms = calloc((size_t)runs, sizeof *ms);
  if (ms == NULL)
    return 1;
  for (i = 0; i < runs; i++) {
    ms[i] = one_run(argv + argi + 1, cpu, timeout_ms);
    if (ms[i] < 0)
      return 1;
  }
  qsort(ms, (size_t)runs, sizeof *ms, cmp_double);
  printf("startup_ms: median %.2f  min %.2f  max %.2f  runs %d\n",
         runs % 2 ? ms[runs / 2] : (ms[runs / 2 - 1] + ms[runs / 2]) / 2, ms[0], ms[runs - 1],
         runs);
  free(ms);
  return 0;
}
