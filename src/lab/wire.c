/*
 * tessera-wire: the forwarding stage of one emulated link of `tessera lab` (docs/lab.md).
 *
 * The kernels Tessera is tested on have no netem qdisc, so delay, jitter and loss are made here,
 * in user space: the stage makes a TUN device in the network namespace of each end of the link
 * and moves IP packets between the two. Each direction is a model of a link: a loss draw, a
 * bounded queue drained at the link's rate (each packet takes its serialization time), then the
 * propagation delay plus jitter. Packets keep their order (a packet is never released before the
 * one ahead of it), as on a wire.
 *
 * One thread, one epoll loop. The next release is waited for by epoll_pwait2 with a nanosecond
 * timeout, with the timer slack at 1 ns: no timerfd to re-arm on every packet. The wait ends
 * early by the usual lateness of a wake-up (measured as it runs), so releases are on time on
 * average rather than late by the wake-up latency.
 *
 * Usage:
 *   tessera-wire --ns-a PATH --dev-a NAME --ns-b PATH --dev-b NAME --control PATH
 *                [--delay-ns N] [--jitter-ns N] [--rate-bps N] [--loss P] [--queue N] [--seed N]
 *   --seed: the same seed, the same draws in each direction for the same packets (a lab rerun).
 *   PATH of --ns-*: a network namespace (/run/netns/NAME); NAME: the TUN device made in it.
 *   --rate-bps 0: no rate limit (and no queue); --loss: a probability, 0 to 1.
 * When fd 3 is open, the stage writes to it "ready\n" once both devices are up and the control
 * socket listens, or "error MESSAGE\n" if it cannot start, then closes it.
 *
 * Control: a Unix stream socket at --control. One line in, one line out, then the stage closes:
 *   set [delay_ns=N] [jitter_ns=N] [rate_bps=N] [loss=P] [queue=N]  ->  ok | error MESSAGE
 *   stats  ->  one line of JSON: the parameters and, per direction (a to b, then b to a), counters
 * A `set` applies to packets read from then on; packets already held keep their release times.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#ifndef SYS_epoll_pwait2
#define SYS_epoll_pwait2 441
#endif

/* Room for one packet: the devices' MTU is set to MTU_BYTES, below it. */
#define SLOT_BYTES 2048
#define MTU_BYTES 1500
/* Packets a direction holds at most (queued and in flight): 1 Gbit/s over ~190 ms one way. */
#define SLOTS 16384
/* Packets read from one device per wake-up, so that releases stay on time under load. */
#define READ_BATCH 64
/* Control connections open at once, and the longest request line. */
#define CONNS_MAX 8
#define LINE_BYTES 512
/* Limits of the parameters (the CLI checks the same; these guard the arithmetic). */
#define DELAY_NS_MAX (60LL * 1000000000LL)
#define RATE_BPS_MAX (1000ULL * 1000000000ULL)
#define QUEUE_MAX (SLOTS)

/* What a link does to each packet; the same in both directions. */
struct params {
  int64_t delay_ns;
  int64_t jitter_ns;
  uint64_t rate_bps; /* 0: unlimited */
  double loss;       /* probability of a packet being lost, 0 to 1 */
  uint32_t queue;    /* packets waiting for the wire at most (with a rate) */
};

struct slot {
  int64_t sent_ns;    /* when its last bit has left the (emulated) sender: arrival + queueing + serialization */
  int64_t release_ns; /* when it is written to the other device: sent_ns + delay + jitter, in order */
  uint32_t len;
};

/* Counters of one direction, as `stats` reports them. */
struct counters {
  uint64_t rx_packets, rx_bytes;  /* read from the input device */
  uint64_t tx_packets, tx_bytes;  /* written to the output device */
  uint64_t lost;                  /* dropped by the loss draw */
  uint64_t queue_drops;           /* dropped because the queue was full (tail drop) */
  uint64_t overflow;              /* dropped because the direction held SLOTS packets */
  uint64_t write_errors;          /* the output device refused the packet */
  int64_t late_ns_sum, late_ns_max; /* how late packets were written after their release time (negative: early) */
};

/* One direction: packets read from `in` are written to `out`. Slots [head, tail) are held, in
 * arrival order; [queued, tail) of them are still waiting for the wire (sent_ns in the future). */
struct dir {
  int in, out;
  struct slot *slots;
  unsigned char *data;
  uint64_t head, tail, queued;
  int64_t last_sent_ns, last_release_ns;
  uint64_t rng; /* its own random stream: what one direction draws does not depend on the other's traffic */
  struct counters c;
};

struct conn {
  int fd;
  size_t used;
  char line[LINE_BYTES];
};

static struct params params;
static struct dir dirs[2];
static struct conn conns[CONNS_MAX];
static int epfd = -1;
static int listen_fd = -1;
static int ready_fd = -1;
/* How late a timed wake-up usually comes (a moving average): the wait ends that much before a
 * release is due, and packets due within it go at once. So releases are on time on average,
 * where otherwise every timed packet would be late by the wake-up latency (~50 us in a VM). */
static int64_t early_ns = 20000;
#define EARLY_NS_MAX 200000

enum { TAG_DEV_A = 0, TAG_DEV_B = 1, TAG_LISTEN = 2, TAG_CONN = 16 };

static void fail(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void fail(const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  fprintf(stderr, "tessera-wire: %s\n", msg);
  if (ready_fd >= 0) dprintf(ready_fd, "error %s\n", msg);
  exit(1);
}

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* xorshift64*: a direction's loss draws and jitter; seeded from getrandom unless --seed. */
static uint64_t rnd(uint64_t *state) {
  uint64_t x = *state;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  *state = x;
  return x * 0x2545F4914F6CDD1DULL;
}

/* Uniform in [0, 1). */
static double rnd01(uint64_t *state) { return (double)(rnd(state) >> 11) * 0x1.0p-53; }

/* splitmix64: one seed into the two directions' streams (never xorshift's fixed point 0). */
static uint64_t mix(uint64_t z) {
  z += 0x9E3779B97F4A7C15ULL;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  z ^= z >> 31;
  return z != 0 ? z : 0x9E3779B97F4A7C15ULL;
}

/* Opens /dev/net/tun inside the namespace at `ns_path`, making (or attaching to) the TUN device
 * `name` there, sets its MTU and brings it up; returns the non-blocking fd. */
static int open_tun(int home_ns, const char *ns_path, const char *name) {
  int ns = open(ns_path, O_RDONLY | O_CLOEXEC);
  if (ns < 0) fail("cannot open namespace %s: %s", ns_path, strerror(errno));
  if (setns(ns, CLONE_NEWNET) < 0) fail("cannot enter namespace %s: %s", ns_path, strerror(errno));
  close(ns);
  int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) fail("cannot open /dev/net/tun: %s", strerror(errno));
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
  if (strlen(name) >= IFNAMSIZ) fail("device name %s is too long", name);
  strcpy(ifr.ifr_name, name);
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) fail("cannot make TUN device %s in %s: %s", name, ns_path, strerror(errno));
  int sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (sock < 0) fail("cannot open a socket in %s: %s", ns_path, strerror(errno));
  struct ifreq req;
  memset(&req, 0, sizeof req);
  strcpy(req.ifr_name, name);
  req.ifr_mtu = MTU_BYTES;
  if (ioctl(sock, SIOCSIFMTU, &req) < 0) fail("cannot set the MTU of %s: %s", name, strerror(errno));
  memset(&req, 0, sizeof req);
  strcpy(req.ifr_name, name);
  req.ifr_qlen = 1000;
  if (ioctl(sock, SIOCSIFTXQLEN, &req) < 0) fail("cannot set the queue length of %s: %s", name, strerror(errno));
  memset(&req, 0, sizeof req);
  strcpy(req.ifr_name, name);
  if (ioctl(sock, SIOCGIFFLAGS, &req) < 0) fail("cannot read the flags of %s: %s", name, strerror(errno));
  req.ifr_flags |= IFF_UP;
  if (ioctl(sock, SIOCSIFFLAGS, &req) < 0) fail("cannot bring %s up: %s", name, strerror(errno));
  close(sock);
  if (setns(home_ns, CLONE_NEWNET) < 0) fail("cannot return to the stage's namespace: %s", strerror(errno));
  return fd;
}

static void init_dir(struct dir *d, int in, int out) {
  d->in = in;
  d->out = out;
  /* Reserved, not committed: only the slots a link's traffic reaches become memory. */
  d->slots = mmap(NULL, sizeof(struct slot) * SLOTS, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  d->data = mmap(NULL, (size_t)SLOT_BYTES * SLOTS, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (d->slots == MAP_FAILED || d->data == MAP_FAILED) fail("cannot reserve packet memory: %s", strerror(errno));
}

/* Serialization time of `len` bytes at the link's rate. */
static int64_t wire_ns(uint32_t len) {
  if (params.rate_bps == 0) return 0;
  return (int64_t)(((uint64_t)len * 8ULL * 1000000000ULL + params.rate_bps - 1) / params.rate_bps);
}

/* Reads what the input device has (up to READ_BATCH packets) and schedules each packet. */
static void drain(struct dir *d, int64_t now) {
  static unsigned char scratch[SLOT_BYTES];
  for (int i = 0; i < READ_BATCH; i++) {
    int full = d->tail - d->head == SLOTS;
    unsigned char *buf = full ? scratch : d->data + (size_t)(d->tail % SLOTS) * SLOT_BYTES;
    ssize_t n = read(d->in, buf, SLOT_BYTES);
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) return;
      fail("cannot read a device: %s", strerror(errno));
    }
    d->c.rx_packets++;
    d->c.rx_bytes += (uint64_t)n;
    if (full) {
      d->c.overflow++;
      continue;
    }
    if (params.loss > 0 && rnd01(&d->rng) < params.loss) {
      d->c.lost++;
      continue;
    }
    /* Packets whose last bit has left the sender no longer count against the queue. */
    if (d->queued < d->head) d->queued = d->head;
    while (d->queued < d->tail && d->slots[d->queued % SLOTS].sent_ns <= now) d->queued++;
    int64_t sent = now;
    if (params.rate_bps != 0) {
      if (d->tail - d->queued >= params.queue) {
        d->c.queue_drops++;
        continue;
      }
      sent = (d->last_sent_ns > now ? d->last_sent_ns : now) + wire_ns((uint32_t)n);
      d->last_sent_ns = sent;
    }
    int64_t delay = params.delay_ns;
    if (params.jitter_ns > 0) delay += (int64_t)((rnd01(&d->rng) * 2.0 - 1.0) * (double)params.jitter_ns);
    if (delay < 0) delay = 0;
    int64_t release = sent + delay;
    if (release < d->last_release_ns) release = d->last_release_ns; /* in order, as on a wire */
    d->last_release_ns = release;
    struct slot *s = &d->slots[d->tail % SLOTS];
    s->sent_ns = sent;
    s->release_ns = release;
    s->len = (uint32_t)n;
    d->tail++;
  }
}

/* Writes every packet whose release time has come, or comes within `early_ns`. */
static void release(struct dir *d, int64_t now) {
  while (d->head < d->tail) {
    struct slot *s = &d->slots[d->head % SLOTS];
    if (s->release_ns > now + early_ns) return;
    ssize_t n = write(d->out, d->data + (size_t)(d->head % SLOTS) * SLOT_BYTES, s->len);
    if (n < 0) {
      if (errno == EINTR) continue;
      d->c.write_errors++;
    } else {
      d->c.tx_packets++;
      d->c.tx_bytes += s->len;
    }
    int64_t late = now - s->release_ns;
    d->c.late_ns_sum += late;
    if (late > d->c.late_ns_max) d->c.late_ns_max = late;
    d->head++;
  }
}

static int64_t next_release(const struct dir *d) {
  return d->head < d->tail ? d->slots[d->head % SLOTS].release_ns : INT64_MAX;
}

/* Parses a whole decimal number within [0, max]. */
static int parse_u64(const char *s, uint64_t max, uint64_t *out) {
  if (*s < '0' || *s > '9') return -1;
  errno = 0;
  char *end;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno != 0 || *end != '\0' || v > max) return -1;
  *out = v;
  return 0;
}

static int parse_prob(const char *s, double *out) {
  if (*s == '\0') return -1;
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (errno != 0 || *end != '\0' || !(v >= 0 && v <= 1)) return -1;
  *out = v;
  return 0;
}

/* Applies `key=value` to `p`; returns an error message or NULL. */
static const char *set_param(struct params *p, const char *key, const char *value) {
  uint64_t v;
  if (strcmp(key, "delay_ns") == 0) {
    if (parse_u64(value, DELAY_NS_MAX, &v) < 0) return "bad delay_ns";
    p->delay_ns = (int64_t)v;
  } else if (strcmp(key, "jitter_ns") == 0) {
    if (parse_u64(value, DELAY_NS_MAX, &v) < 0) return "bad jitter_ns";
    p->jitter_ns = (int64_t)v;
  } else if (strcmp(key, "rate_bps") == 0) {
    if (parse_u64(value, RATE_BPS_MAX, &v) < 0) return "bad rate_bps";
    p->rate_bps = v;
  } else if (strcmp(key, "loss") == 0) {
    if (parse_prob(value, &p->loss) < 0) return "bad loss";
  } else if (strcmp(key, "queue") == 0) {
    if (parse_u64(value, QUEUE_MAX, &v) < 0 || v == 0) return "bad queue";
    p->queue = (uint32_t)v;
  } else {
    return "unknown parameter";
  }
  return NULL;
}

static int stats_json(char *out, size_t size) {
  int n = snprintf(out, size, "{\"delay_ns\":%" PRId64 ",\"jitter_ns\":%" PRId64 ",\"rate_bps\":%" PRIu64 ",\"loss\":%.9g,\"queue\":%u,\"dirs\":[",
                   params.delay_ns, params.jitter_ns, params.rate_bps, params.loss, params.queue);
  for (int i = 0; i < 2 && n > 0 && (size_t)n < size; i++) {
    const struct dir *d = &dirs[i];
    const struct counters *c = &d->c;
    n += snprintf(out + n, size - (size_t)n,
                  "%s{\"rx_packets\":%" PRIu64 ",\"rx_bytes\":%" PRIu64 ",\"tx_packets\":%" PRIu64 ",\"tx_bytes\":%" PRIu64
                  ",\"lost\":%" PRIu64 ",\"queue_drops\":%" PRIu64 ",\"overflow\":%" PRIu64 ",\"write_errors\":%" PRIu64
                  ",\"held\":%" PRIu64 ",\"late_ns_sum\":%" PRId64 ",\"late_ns_max\":%" PRId64 "}",
                  i ? "," : "", c->rx_packets, c->rx_bytes, c->tx_packets, c->tx_bytes, c->lost, c->queue_drops, c->overflow,
                  c->write_errors, d->tail - d->head, c->late_ns_sum, c->late_ns_max);
  }
  if (n > 0 && (size_t)n < size) n += snprintf(out + n, size - (size_t)n, "]}\n");
  return n;
}

/* Answers one request line. */
static void handle_line(int fd, char *line) {
  char reply[2048];
  int n;
  if (strcmp(line, "stats") == 0) {
    n = stats_json(reply, sizeof reply);
  } else if (strncmp(line, "set", 3) == 0 && (line[3] == ' ' || line[3] == '\0')) {
    struct params next = params;
    const char *err = NULL;
    char *save = NULL;
    for (char *tok = strtok_r(line + 3, " ", &save); tok != NULL && err == NULL; tok = strtok_r(NULL, " ", &save)) {
      char *eq = strchr(tok, '=');
      if (eq == NULL) {
        err = "expected key=value";
        break;
      }
      *eq = '\0';
      err = set_param(&next, tok, eq + 1);
    }
    if (err == NULL) params = next;
    n = snprintf(reply, sizeof reply, err == NULL ? "ok\n" : "error %s\n", err);
  } else {
    n = snprintf(reply, sizeof reply, "error unknown request\n");
  }
  /* The reply is small and the socket's buffer empty: one write takes it all, or the peer is gone. */
  if (n > 0) (void)!write(fd, reply, (size_t)n);
}

static void close_conn(struct conn *c) {
  close(c->fd);
  c->fd = -1;
  c->used = 0;
}

static void accept_conns(void) {
  for (;;) {
    int fd = accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return;
    int slot = -1;
    for (int i = 0; i < CONNS_MAX; i++)
      if (conns[i].fd < 0) slot = i;
    if (slot < 0) {
      static const char busy[] = "error busy\n";
      (void)!write(fd, busy, sizeof busy - 1);
      close(fd);
      continue;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = TAG_CONN + (uint32_t)slot};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
      close(fd);
      continue;
    }
    conns[slot].fd = fd;
    conns[slot].used = 0;
  }
}

static void read_conn(struct conn *c) {
  ssize_t n = read(c->fd, c->line + c->used, sizeof c->line - 1 - c->used);
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
  if (n <= 0) {
    close_conn(c);
    return;
  }
  c->used += (size_t)n;
  c->line[c->used] = '\0';
  char *nl = strchr(c->line, '\n');
  if (nl == NULL) {
    if (c->used == sizeof c->line - 1) {
      static const char long_line[] = "error line too long\n";
      (void)!write(c->fd, long_line, sizeof long_line - 1);
      close_conn(c);
    }
    return;
  }
  *nl = '\0';
  handle_line(c->fd, c->line);
  close_conn(c);
}

static int listen_control(const char *path) {
  struct sockaddr_un addr;
  memset(&addr, 0, sizeof addr);
  addr.sun_family = AF_UNIX;
  if (strlen(path) >= sizeof addr.sun_path) fail("control path %s is too long", path);
  strcpy(addr.sun_path, path);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) fail("cannot open the control socket: %s", strerror(errno));
  unlink(path);
  if (bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0) fail("cannot bind %s: %s", path, strerror(errno));
  if (listen(fd, CONNS_MAX) < 0) fail("cannot listen on %s: %s", path, strerror(errno));
  return fd;
}

static void watch(int fd, uint32_t tag) {
  struct epoll_event ev = {.events = EPOLLIN, .data.u32 = tag};
  if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0) fail("epoll_ctl: %s", strerror(errno));
}

/* Whether the kernel has epoll_pwait2 (5.11 and later); without it, waits are whole milliseconds. */
static int have_pwait2 = 1;
/* Whether the stage runs under SCHED_FIFO (then its waits have no slack at all). */
static int realtime = 0;

/* Waits for events or until `deadline` (INT64_MAX: no deadline), to the nanosecond. */
static int wait_events(struct epoll_event *evs, int max, int64_t deadline) {
  if (deadline == INT64_MAX) return epoll_wait(epfd, evs, max, -1);
  int64_t left = deadline - now_ns();
  if (left < 0) left = 0;
  if (!have_pwait2) return epoll_wait(epfd, evs, max, (int)((left + 999999) / 1000000));
  /* The kernel lets a wait of t end up to t/1000 late (its slack for non-real-time tasks, above
   * the 1 ns asked for): ask for a thousandth less, so that the release is on time. A wake-up
   * that comes early finds nothing due and waits again, to the nanosecond. */
  if (!realtime) left -= left / 1001;
  struct timespec ts = {.tv_sec = left / 1000000000LL, .tv_nsec = left % 1000000000LL};
  int n = (int)syscall(SYS_epoll_pwait2, epfd, evs, max, &ts, NULL, (size_t)8);
  if (n < 0 && errno == ENOSYS) {
    fprintf(stderr, "tessera-wire: no epoll_pwait2 in this kernel: releases to the millisecond\n");
    have_pwait2 = 0;
    return 0;
  }
  return n;
}

int main(int argc, char **argv) {
  const char *ns_a = NULL, *dev_a = NULL, *ns_b = NULL, *dev_b = NULL, *control = NULL;
  int seeded = 0;
  uint64_t seed = 0;
  params.queue = 1000;
  if (fcntl(3, F_GETFD) >= 0) ready_fd = 3;
  for (int i = 1; i < argc; i++) {
    const char *opt = argv[i];
    if (i + 1 >= argc) fail("option %s needs a value", opt);
    const char *v = argv[++i];
    uint64_t u;
    if (strcmp(opt, "--ns-a") == 0) ns_a = v;
    else if (strcmp(opt, "--dev-a") == 0) dev_a = v;
    else if (strcmp(opt, "--ns-b") == 0) ns_b = v;
    else if (strcmp(opt, "--dev-b") == 0) dev_b = v;
    else if (strcmp(opt, "--control") == 0) control = v;
    else if (strcmp(opt, "--seed") == 0) {
      if (parse_u64(v, UINT64_MAX, &u) < 0) fail("bad --seed %s", v);
      seed = u;
      seeded = 1;
    } else if (strncmp(opt, "--", 2) == 0) {
      char key[32];
      snprintf(key, sizeof key, "%s", opt + 2);
      for (char *k = key; *k; k++)
        if (*k == '-') *k = '_';
      const char *err = set_param(&params, key, v);
      if (err != NULL) fail("%s: %s", opt, err);
    } else {
      fail("unexpected argument %s", opt);
    }
  }
  if (!ns_a || !dev_a || !ns_b || !dev_b || !control) fail("--ns-a, --dev-a, --ns-b, --dev-b and --control are required");
  if (!seeded && getrandom(&seed, sizeof seed, 0) != sizeof seed) fail("getrandom: %s", strerror(errno));
  signal(SIGPIPE, SIG_IGN);
  /* Wake-ups to the nanosecond: the default slack (50 us) would be part of every delay. */
  prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
  /* A link is part of the network, not one more application: on a busy machine its releases
   * must not wait behind the processes it carries traffic for. With other work on both CPUs of
   * the test machine, a 10 ms link's round trips came out 20-33 ms on average at nice -10 and
   * 20.1 ms under SCHED_FIFO (and the kernel's receive work for the packets it writes runs in its
   * context, so that is on time too). One thread that sleeps in epoll when idle: at most one CPU,
   * and the kernel's real-time throttling leaves every CPU 5% for others even then. Without the
   * privilege, the highest ordinary priority. */
  struct sched_param sp = {.sched_priority = 10};
  if (sched_setscheduler(0, SCHED_FIFO | SCHED_RESET_ON_FORK, &sp) == 0) realtime = 1;
  else (void)setpriority(PRIO_PROCESS, 0, -10);

  int home = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
  if (home < 0) fail("cannot open /proc/self/ns/net: %s", strerror(errno));
  int fd_a = open_tun(home, ns_a, dev_a);
  int fd_b = open_tun(home, ns_b, dev_b);
  close(home);
  init_dir(&dirs[0], fd_a, fd_b);
  init_dir(&dirs[1], fd_b, fd_a);
  dirs[0].rng = mix(seed);
  dirs[1].rng = mix(seed ^ 0xA5A5A5A5A5A5A5A5ULL);
  for (int i = 0; i < CONNS_MAX; i++) conns[i].fd = -1;

  epfd = epoll_create1(EPOLL_CLOEXEC);
  if (epfd < 0) fail("epoll_create1: %s", strerror(errno));
  listen_fd = listen_control(control);
  watch(fd_a, TAG_DEV_A);
  watch(fd_b, TAG_DEV_B);
  watch(listen_fd, TAG_LISTEN);
  if (ready_fd >= 0) {
    (void)!write(ready_fd, "ready\n", 6);
    close(ready_fd);
    ready_fd = -1;
  }

  struct epoll_event evs[16];
  for (;;) {
    int64_t a = next_release(&dirs[0]), b = next_release(&dirs[1]);
    int64_t due = a < b ? a : b;
    int64_t target = due == INT64_MAX ? INT64_MAX : due - early_ns;
    int64_t waited_from = now_ns();
    int n = wait_events(evs, 16, target);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail("epoll: %s", strerror(errno));
    }
    int64_t now = now_ns();
    if (n == 0 && target != INT64_MAX && target > waited_from) {
      /* A timed wake-up that slept: how late it came, into the moving average (a stall is not a
       * latency, hence the cap; a wait for a time already past is no wake-up at all). */
      int64_t lat = now - target;
      if (lat < 0) lat = 0;
      if (lat > EARLY_NS_MAX) lat = EARLY_NS_MAX;
      early_ns += (lat - early_ns) / 16;
    }
    for (int i = 0; i < n; i++) {
      uint32_t tag = evs[i].data.u32;
      if (tag == TAG_DEV_A || tag == TAG_DEV_B) drain(&dirs[tag], now);
      else if (tag == TAG_LISTEN) accept_conns();
      else if (tag >= TAG_CONN && tag < TAG_CONN + CONNS_MAX) read_conn(&conns[tag - TAG_CONN]);
    }
    now = now_ns();
    release(&dirs[0], now);
    release(&dirs[1], now);
  }
}
