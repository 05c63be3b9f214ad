build-asan/src/cli/cli_queue.o: src/cli/cli_queue.c src/cli/cli.h \
 src/event/config.h src/base/privs.h src/queue/queue_file.h
src/cli/cli.h:
src/event/config.h:
src/base/privs.h:
src/queue/queue_file.h:
