build-asan/src/directory/directory_resolve.o: \
 src/directory/directory_resolve.c src/directory/directory_private.h \
 src/directory/directory.h src/base/log.h
src/directory/directory_private.h:
src/directory/directory.h:
src/base/log.h:
