build-asan/src/directory/directory.o: src/directory/directory.c \
 src/directory/directory_private.h src/directory/directory.h \
 src/base/log.h
src/directory/directory_private.h:
src/directory/directory.h:
src/base/log.h:
