build-asan/src/queue/queue_file.o: src/queue/queue_file.c \
 src/queue/queue_file.h src/base/buf.h src/base/file.h
src/queue/queue_file.h:
src/base/buf.h:
src/base/file.h:
