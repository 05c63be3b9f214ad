build-asan/src/daemon/session_worker.o: src/daemon/session_worker.c \
 src/daemon/worker.h src/event/config.h src/auth/password.h \
 src/base/log.h src/base/privs.h src/directory/directory.h \
 src/event/pool.h src/queue/queue_file.h src/smtp/smtp_server.h \
 src/msg/addr.h src/smtp/smtp_parse.h
src/daemon/worker.h:
src/event/config.h:
src/auth/password.h:
src/base/log.h:
src/base/privs.h:
src/directory/directory.h:
src/event/pool.h:
src/queue/queue_file.h:
src/smtp/smtp_server.h:
src/msg/addr.h:
src/smtp/smtp_parse.h:
