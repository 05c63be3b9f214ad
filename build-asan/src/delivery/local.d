build-asan/src/delivery/local.o: src/delivery/local.c \
 src/delivery/local.h src/base/file.h src/base/log.h \
 src/directory/directory.h src/queue/queue_file.h src/store/maildir.h
src/delivery/local.h:
src/base/file.h:
src/base/log.h:
src/directory/directory.h:
src/queue/queue_file.h:
src/store/maildir.h:
