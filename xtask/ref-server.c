/*
 * REFERENCE SERVER FOR THE BENCH ONLY — not Tideway, not for any other use.
 *
 * The least a server must do for the bench's unicast and fan-out scenarios, to show how far
 * each figure is from what this machine allows: one thread, epoll, HTTP/1.1 written and
 * read by hand, Nchan's routes (so `tideway-load --target nchan` drives it unchanged):
 *
 *   GET  /sub/<topic>    an SSE stream (no chunking: the body runs until the close)
 *   POST /pub/<topic>    the body, framed once as `data: <body>\n\n`, written to every
 *                        subscriber of the topic; answers 201 if it had any, else 202
 *                        (Nchan's codes, which the drop scenario tells apart)
 *   POST /batch          a batch, one event per line, `<topic> <data>\n`: each event
 *                        framed and written as above, in order; answers 202. Nchan has
 *                        no batch route: this is the floor for Tideway's batch scenarios
 *                        (their JSON parsing aside)
 *   GET  /nchan_status   `subscribers: <n>`
 *
 * No auth, no limits, no history, no resume, no checks beyond what the load generator
 * sends: it trusts its peer completely. Built and started by `cargo xtask bench`.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_FDS 65536
#define TOPICS 65536 /* open-addressing table size, a power of two */

typedef struct {
  char *data;
  size_t len, cap;
} buf_t;

typedef struct {
  int open;
  int waiting;    /* watching for EPOLLOUT: the socket was full */
  int subscriber; /* a stream: only written to */
  int topic;      /* its topic slot, for a subscriber */
  buf_t in, out;
} conn_t;

typedef struct {
  char *name;
  int *fds;
  int count, cap;
} topic_t;

static conn_t conns[MAX_FDS];
static topic_t topics[TOPICS];
static int epfd;
static long subscribers;

static void append(buf_t *b, const char *data, size_t len) {
  if (b->len + len > b->cap) {
    b->cap = (b->len + len) * 2;
    b->data = realloc(b->data, b->cap);
  }
  memcpy(b->data + b->len, data, len);
  b->len += len;
}

static unsigned hash(const char *s, size_t n) {
  unsigned h = 2166136261u;
  for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 16777619u;
  return h;
}

/* The slot of topic `name` (`n` bytes), made when `create`; -1 if absent. */
static int topic_slot(const char *name, size_t n, int create) {
  unsigned i = hash(name, n) & (TOPICS - 1);
  while (topics[i].name) {
    if (strlen(topics[i].name) == n && memcmp(topics[i].name, name, n) == 0) return (int)i;
    i = (i + 1) & (TOPICS - 1);
  }
  if (!create) return -1;
  topics[i].name = strndup(name, n);
  return (int)i;
}

static void watch(int fd, unsigned events, int op) {
  struct epoll_event ev = {.events = events, .data.fd = fd};
  epoll_ctl(epfd, op, fd, &ev);
}

/* Writes what `fd` has pending; waits for EPOLLOUT when the socket is full. */
static void flush(int fd) {
  conn_t *c = &conns[fd];
  size_t done = 0;
  while (done < c->out.len) {
    ssize_t n = write(fd, c->out.data + done, c->out.len - done);
    if (n > 0) {
      done += (size_t)n;
    } else if (n < 0 && errno == EAGAIN) {
      break;
    } else {
      break;
    }
  }
  memmove(c->out.data, c->out.data + done, c->out.len - done);
  c->out.len -= done;
  /* Only when the interest changes: a syscall per write would flatter the servers compared. */
  int waiting = c->out.len > 0;
  if (waiting != c->waiting) {
    c->waiting = waiting;
    watch(fd, EPOLLIN | (waiting ? EPOLLOUT : 0), EPOLL_CTL_MOD);
  }
}

static void send_to(int fd, const char *data, size_t len) {
  conn_t *c = &conns[fd];
  append(&c->out, data, len);
  if (c->out.len == len) flush(fd); /* nothing was waiting: write now */
}

static void close_conn(int fd) {
  conn_t *c = &conns[fd];
  if (c->subscriber) {
    topic_t *t = &topics[c->topic];
    for (int i = 0; i < t->count; i++)
      if (t->fds[i] == fd) {
        t->fds[i] = t->fds[--t->count];
        break;
      }
    subscribers--;
  }
  c->open = c->subscriber = c->waiting = 0;
  c->in.len = c->out.len = 0;
  close(fd);
}

static const char created[] = "HTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n";
static const char accepted[] = "HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n";

/* Frames `body` once and writes it to every subscriber of `topic`; says whether it had any. */
static int publish(const char *topic, size_t topic_len, const char *body, size_t body_len) {
  int slot = topic_slot(topic, topic_len, 0);
  if (slot < 0 || topics[slot].count == 0) return 0;
  size_t frame_len = 6 + body_len + 2;
  char *frame = malloc(frame_len);
  memcpy(frame, "data: ", 6);
  memcpy(frame + 6, body, body_len);
  memcpy(frame + 6 + body_len, "\n\n", 2);
  topic_t *t = &topics[slot];
  for (int i = 0; i < t->count; i++) send_to(t->fds[i], frame, frame_len);
  free(frame);
  return 1;
}

/* Handles every complete request in `fd`'s input. */
static void serve(int fd) {
  conn_t *c = &conns[fd];
  for (;;) {
    char *end = memmem(c->in.data, c->in.len, "\r\n\r\n", 4);
    if (!end) return;
    size_t head = (size_t)(end - c->in.data) + 4;
    size_t body = 0;
    char last = c->in.data[head - 1];
    c->in.data[head - 1] = 0; /* the head as a string, for a case-blind search */
    char *cl = strcasestr(c->in.data, "content-length:");
    if (cl) body = strtoul(cl + 15, NULL, 10);
    c->in.data[head - 1] = last;
    if (c->in.len < head + body) return;
    char *path = memchr(c->in.data, ' ', head);
    if (!path) return;
    path++;
    char *path_end = memchr(path, ' ', head - (size_t)(path - c->in.data));
    size_t path_len = path_end ? (size_t)(path_end - path) : 0;
    if (path_len > 5 && memcmp(path, "/sub/", 5) == 0) {
      int slot = topic_slot(path + 5, path_len - 5, 1);
      topic_t *t = &topics[slot];
      if (t->count == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 4;
        t->fds = realloc(t->fds, sizeof(int) * (size_t)t->cap);
      }
      t->fds[t->count++] = fd;
      c->subscriber = 1;
      c->topic = slot;
      subscribers++;
      static const char ok[] =
          "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n\r\n";
      send_to(fd, ok, sizeof ok - 1);
    } else if (path_len > 5 && memcmp(path, "/pub/", 5) == 0) {
      if (publish(path + 5, path_len - 5, c->in.data + head, body))
        send_to(fd, created, sizeof created - 1);
      else
        send_to(fd, accepted, sizeof accepted - 1);
    } else if (path_len == 6 && memcmp(path, "/batch", 6) == 0) {
      const char *line = c->in.data + head, *end_of_body = line + body;
      while (line < end_of_body) {
        const char *eol = memchr(line, '\n', (size_t)(end_of_body - line));
        if (!eol) eol = end_of_body;
        const char *space = memchr(line, ' ', (size_t)(eol - line));
        if (space) publish(line, (size_t)(space - line), space + 1, (size_t)(eol - space - 1));
        line = eol + 1;
      }
      send_to(fd, accepted, sizeof accepted - 1);
    } else {
      char answer[128];
      char text[48];
      int n = snprintf(text, sizeof text, "subscribers: %ld\n", subscribers);
      int m = snprintf(answer, sizeof answer,
                       "HTTP/1.1 200 OK\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%s", n, text);
      send_to(fd, answer, (size_t)m);
      /* The load generator reads the status to the end of the connection. */
      shutdown(fd, SHUT_WR);
    }
    memmove(c->in.data, c->in.data + head + body, c->in.len - head - body);
    c->in.len -= head + body;
  }
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: ref-server PORT (the bench's reference server)\n");
    return 2;
  }
  int listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  int one = 1;
  setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(argv[1]))};
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(listener, (struct sockaddr *)&addr, sizeof addr) || listen(listener, 4096)) {
    perror("ref-server: listen");
    return 1;
  }
  epfd = epoll_create1(0);
  watch(listener, EPOLLIN, EPOLL_CTL_ADD);
  struct epoll_event events[512];
  char chunk[65536];
  for (;;) {
    int n = epoll_wait(epfd, events, 512, -1);
    for (int i = 0; i < n; i++) {
      int fd = events[i].data.fd;
      if (fd == listener) {
        int client;
        while ((client = accept4(listener, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
          if (client >= MAX_FDS) {
            close(client);
            continue;
          }
          setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          conns[client].open = 1;
          watch(client, EPOLLIN, EPOLL_CTL_ADD);
        }
        continue;
      }
      if (events[i].events & EPOLLOUT) flush(fd);
      if (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
        ssize_t got;
        int closed = 0;
        /* Level-triggered: a short read took all there was, and epoll says when there is more. */
        while ((got = read(fd, chunk, sizeof chunk)) > 0) {
          append(&conns[fd].in, chunk, (size_t)got);
          if ((size_t)got < sizeof chunk) break;
        }
        if (got == 0 || (got < 0 && errno != EAGAIN)) closed = 1;
        if (conns[fd].in.len) serve(fd);
        if (closed) close_conn(fd);
      }
    }
  }
}
