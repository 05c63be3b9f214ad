build-asan/src/daemon/delivery_worker.o: src/daemon/delivery_worker.c \
 src/daemon/worker.h src/event/config.h src/base/log.h \
 src/delivery/local.h src/directory/directory.h src/event/pool.h \
 src/queue/queue_file.h
src/daemon/worker.h:
src/event/config.h:
src/base/log.h:
src/delivery/local.h:
src/directory/directory.h:
src/event/pool.h:
src/queue/queue_file.h:
